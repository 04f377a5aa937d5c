"""The validator's desk: ``distil review`` serves server-rendered pages over the ledger and the run folders.

:mod:`distil.review.views` reads what each page shows, :mod:`distil.review.charts` draws its SVG charts and
:mod:`distil.review.app` serves them (FastAPI, Jinja2 templates and static files shipped in this package).
"""
