"""Cost per 1M requests, monthly savings and the payback period of the build cost, from spec.cost."""

from __future__ import annotations

from distil.spec.models import Cost


def cost_summary(cost: Cost, horizon_months: int = 24) -> dict:
    """Teacher and student cost per 1M requests, monthly spend of each at the spec's volume, monthly
    savings, payback period in months (null when the student saves nothing) and the cumulative net
    saving per month over ``horizon_months`` (month 0 is the build cost, negative), for the chart."""
    per_month = cost.monthly_requests / 1_000_000
    teacher_monthly = cost.teacher_per_1m_requests * per_month
    student_monthly = cost.student_per_1m_requests * per_month
    savings = teacher_monthly - student_monthly
    payback = cost.build_cost / savings if savings > 0 else None
    if savings > 0 and cost.build_cost == 0:
        payback = 0.0
    return {
        "currency": cost.currency,
        "teacher_per_1m_requests": cost.teacher_per_1m_requests,
        "student_per_1m_requests": cost.student_per_1m_requests,
        "monthly_requests": cost.monthly_requests,
        "teacher_monthly": teacher_monthly,
        "student_monthly": student_monthly,
        "monthly_savings": savings,
        "build_cost": cost.build_cost,
        "payback_months": payback,
        "cumulative_net": [-cost.build_cost + savings * month for month in range(horizon_months + 1)],
    }
