"""The server under load, over real HTTP on 127.0.0.1: a full queue answers 429 at once, so does a model request
while the event loop runs behind, a request the student has not started on in time is refused and never run, a
saturated or slow teacher leaves the student's answer (marked), probes answer while the models are busy, and long
inputs are cut to the student's context.

The models are gated stand-ins (they block until the test lets them go), so "busy" is a state the test
holds, not a race it hopes to win."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from distil.serve.context import ContextFitter
from distil.serve.runs import ServedModel
from distil.serve.server import create_app
from distil.serve.traffic import TrafficLog, read_traffic
from distil.spec.models import ServeSpec
from tests.conftest import TINY_TOKENIZER
from tests.serve.conftest import LABELS, loop_held_behind, running_server, wait_for

SURE = np.array([0.9, 0.05, 0.05])  # above the test threshold: the student answers
UNSURE = np.array([0.2, 0.5, 0.3])  # below it: escalated


class GatedModel:
    """A model whose passes wait for ``gate`` (set: they run at once); it records every text it is asked about."""

    labels = LABELS

    def __init__(self, row_for=lambda text: UNSURE, gated: bool = True):
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.row_for = row_for
        self.seen: list[str] = []
        self.running = threading.Event()  # a pass has started

    def label_distribution(self, inputs):
        self.running.set()
        assert self.gate.wait(60), "the test never opened the gate"
        self.seen.extend(inputs)
        return np.array([self.row_for(t) for t in inputs])


def _served(student, teacher=None, threshold: float = 0.0, **limits) -> ServedModel:
    return ServedModel("m", "classify", LABELS, student, teacher, threshold, limits=ServeSpec(**limits))


def test_a_full_queue_answers_429_with_retry_after_while_probes_still_answer():
    student = GatedModel()
    served = _served(student, queue_depth=2, deadline_s=60, max_batch=1)
    with running_server(create_app(served)) as (url, _), ThreadPoolExecutor(4) as pool:
        with httpx.Client(base_url=url, timeout=60) as c:
            assert c.get("/readyz").status_code == 200
            held = [pool.submit(c.post, "/v1/classify", json={"input": f"held {i}"}) for i in range(2)]
            wait_for(lambda: c.get("/readyz").status_code == 503, "the student's queue filled")
            # the student is still busy (its gate is shut): these answers did not wait behind it
            r = c.post("/v1/classify", json={"input": "one too many"})
            assert r.status_code == 429 and r.headers["retry-after"] == "60"
            assert r.json()["error"]["type"] == "rate_limit_error" and r.json()["error"]["code"] == "queue_full"
            assert c.get("/healthz").json()["status"] == "ok"
            busy = c.get("/readyz")
            assert busy.status_code == 503 and busy.json()["queues"]["student"] == {"load": 2, "depth": 2}
            assert not student.gate.is_set() and "one too many" not in student.seen
            student.gate.set()
            assert [f.result().status_code for f in held] == [200, 200]
            assert c.get("/readyz").status_code == 200
            assert 'distil_requests_total{endpoint="/v1/classify",status="429"} 1' in c.get("/metrics").text


def test_while_the_event_loop_runs_behind_model_requests_get_429_before_parsing_and_readiness_says_busy():
    """The loop is held behind by a callback that takes 0.3 s a turn (as parsing and answering hundreds of other
    requests would); the student is idle all along, so only the loop's lag can refuse."""
    student = GatedModel(gated=False)
    served = _served(student, max_loop_lag_s=0.1)
    with running_server(create_app(served)) as (url, server), httpx.Client(base_url=url, timeout=60) as c:
        wait_for(lambda: c.post("/v1/classify", json={"input": "before"}).status_code == 200, "an answer")
        with loop_held_behind(server):
            wait_for(lambda: c.get("/readyz").status_code == 503, "readiness saw the loop behind", attempts=50)
            refused = c.post("/v1/classify", content=b"{not json")  # refused before its body is read as JSON: not 400
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "server_busy" and "behind" in refused.json()["error"]["message"]
            assert c.post("/v1/chat/completions", json={"messages": []}).status_code == 429
            assert c.get("/healthz").json()["status"] == "ok" and c.get("/v1/models").status_code == 200  # not shed
            busy = c.get("/readyz").json()
            assert busy["status"] == "busy" and busy["loop_lag_ms"] > 100 and busy["queues"]["student"]["load"] == 0
        wait_for(lambda: c.get("/readyz").status_code == 200, "the loop caught up")
        wait_for(lambda: c.post("/v1/classify", json={"input": "after"}).status_code == 200, "an answer again")
        assert 'distil_requests_total{endpoint="/v1/classify",status="429"}' in c.get("/metrics").text
    assert student.seen == ["before", "after"]  # the refused requests never reached the model


def test_probes_are_answered_by_the_connection_while_the_queue_and_the_connection_cap_are_full():
    """With the student blocked, its queue full and every connection slot taken, a request that reaches the app
    gets uvicorn's 503; the probes do not reach it: the connection answers them from the queue state."""
    student = GatedModel()
    served = _served(student, queue_depth=2, deadline_s=60, max_batch=1, max_connections=4)
    with running_server(create_app(served)) as (url, _), ThreadPoolExecutor(4) as pool:
        with httpx.Client(base_url=url, timeout=60) as c:
            held = [pool.submit(c.post, "/v1/classify", json={"input": f"held {i}"}) for i in range(2)]
            wait_for(lambda: c.get("/readyz").status_code == 503, "the student's queue filled")
            idle = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))  # the 4th connection
            idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(idle).startswith(b"HTTP/1.1 200 OK")  # accepted, and kept open
            over_cap = c.get("/v1/models")
            assert (over_cap.status_code, over_cap.text) == (503, "Service Unavailable")  # uvicorn: the cap is reached
            assert c.get("/healthz").json() == {"status": "ok", "model": "m", "kind": "classify"}
            busy = c.get("/readyz")
            assert busy.status_code == 503 and busy.json()["status"] == "busy"
            assert busy.json()["queues"]["student"] == {"load": 2, "depth": 2}
            student.gate.set()
            assert [f.result().status_code for f in held] == [200, 200]
            idle.close()
            assert c.get("/readyz").json()["status"] == "ready"
            assert 'distil_requests_total{endpoint="/healthz",status="200"} 2' in c.get("/metrics").text


def test_a_probe_keeps_its_connection_open_unless_asked_to_close_and_odd_probes_reach_the_app():
    with running_server(create_app(_served(GatedModel(gated=False)))) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for _ in range(2):  # two probes on one keep-alive connection
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _read_response(s).startswith(b"HTTP/1.1 200 OK")
            s.sendall(b"GET /readyz?verbose=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = _read_response(s)
            assert answer.startswith(b"HTTP/1.1 200 OK") and b'"status":"ready"' in answer
            assert b"connection: close" in answer.lower() and s.recv(64) == b""  # closed, as asked
        # a probe with a body, and one split over two packets, go through the app and are answered the same
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.request("GET", "/healthz", content=b"x").json()["status"] == "ok"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            s.sendall(b"Host: x\r\n\r\n")
            assert _read_response(s).startswith(b"HTTP/1.1 200 OK")


def _read_response(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:")).split(b":")[1])
    while len(body) < length:
        body += s.recv(4096)
    return head + b"\r\n\r\n" + body


def test_a_request_not_started_before_its_deadline_is_refused_and_never_run():
    student = GatedModel()
    served = _served(student, queue_depth=10, deadline_s=0.3, max_batch=1)
    with running_server(create_app(served)) as (url, _), ThreadPoolExecutor(2) as pool:
        with httpx.Client(base_url=url, timeout=60) as c:
            first = pool.submit(c.post, "/v1/classify", json={"input": "first"})
            assert student.running.wait(30)  # the first pass holds the student
            r = c.post("/v1/classify", json={"input": "second"})
            assert r.status_code == 429 and r.json()["error"]["code"] == "deadline_exceeded"
            assert r.headers["retry-after"] == "1"
            assert not student.gate.is_set()  # refused while the student was still busy with the first
            student.gate.set()
            assert first.result().status_code == 200  # started in time: answered however long it took
            assert c.post("/v1/classify", json={"input": "third"}).status_code == 200
    assert student.seen == ["first", "third"]  # the refused request never reached the model


def test_a_saturated_or_slow_teacher_leaves_the_students_answer_marked_as_such(tmp_path):
    student = GatedModel(lambda text: SURE if text.startswith("sure") else UNSURE, gated=False)
    teacher = GatedModel(lambda text: np.array([0.0, 0.0, 1.0]))
    log = TrafficLog(tmp_path / "traffic", redaction=False, flush_every_s=0)
    served = _served(student, teacher, threshold=0.8, teacher_queue_depth=1, teacher_deadline_s=1.0)
    with running_server(create_app(served, traffic=log)) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as c:
            slow = c.post("/v1/classify", json={"input": "unsure 1"}).json()["data"][0]
            assert teacher.running.is_set() and not teacher.gate.is_set()  # the teacher holds that pass
            assert (slow["route"], slow["fallback"], slow["label"]) == ("student_fallback", "teacher_slow", "technical")
            busy = c.post("/v1/classify", json={"input": "unsure 2"}).json()["data"][0]
            assert (busy["route"], busy["fallback"]) == ("student_fallback", "teacher_busy")
            # the student's own answers are not held up by the teacher's queue
            sure = c.post("/v1/classify", json={"input": "sure thing"}).json()["data"][0]
            assert sure["route"] == "student" and "fallback" not in sure
            chat = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "unsure 3"}]})
            assert chat.json()["distil"]["route"] == "student_fallback"
            assert chat.json()["choices"][0]["message"]["content"] == "technical"
            teacher.gate.set()
            wait_for(lambda: c.get("/readyz").json()["queues"]["teacher"]["load"] == 0, "the teacher's pass ended")
            answered = c.post("/v1/classify", json={"input": "unsure 4"}).json()["data"][0]
            assert (answered["route"], answered["label"]) == ("teacher", "account") and "fallback" not in answered
    assert teacher.seen == ["unsure 1", "unsure 4"]  # 2 and 3 were never queued for it
    routes = {r["input"]: r["route"] for r in read_traffic(tmp_path / "traffic")}
    assert routes == {
        "unsure 1": "student_fallback",
        "unsure 2": "student_fallback",
        "sure thing": "student",
        "unsure 3": "student_fallback",
        "unsure 4": "teacher",
    }


def test_a_failing_teacher_leaves_the_students_answer():
    class BrokenTeacher:
        def label_distribution(self, inputs):
            raise ConnectionError("the teacher's server is down")

    student = GatedModel(gated=False)
    with running_server(create_app(_served(student, BrokenTeacher(), threshold=0.8))) as (url, _):
        item = httpx.post(f"{url}/v1/classify", json={"input": "unsure"}, timeout=60).json()["data"][0]
    assert (item["route"], item["fallback"], item["label"]) == ("student_fallback", "teacher_error", "technical")


@pytest.mark.parametrize("endpoint", ["/v1/classify", "/v1/chat/completions"])
def test_a_long_input_is_cut_to_the_context_for_student_and_teacher_and_the_cut_is_reported(endpoint):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER))
    student, teacher = GatedModel(gated=False), GatedModel(gated=False)
    served = _served(student, teacher, threshold=0.8)
    served.fit = ContextFitter(tokenizer, 16)
    text = "start " + " ".join(f"word{i}" for i in range(200_000 // 8)) + " the end"
    body = {"input": text} if endpoint == "/v1/classify" else {"messages": [{"role": "user", "content": text}]}
    with running_server(create_app(served)) as (url, _):
        r = httpx.post(url + endpoint, json=body, timeout=60)
    assert r.status_code == 200, r.text
    report = r.json()["data"][0] if endpoint == "/v1/classify" else r.json()["distil"]
    assert report["truncated"] is True and report["kept_tokens"] == 16
    kept = text[report["dropped_characters"] :]
    assert student.seen == [kept] and teacher.seen == [kept]  # the teacher got the same bounded text
    assert kept.endswith("the end") and len(tokenizer(kept, add_special_tokens=False)["input_ids"]) <= 16
    with running_server(create_app(served)) as (url, _):
        short = httpx.post(url + endpoint, json=_short(endpoint), timeout=60)
    report = short.json()["data"][0] if endpoint == "/v1/classify" else short.json()["distil"]
    assert report["truncated"] is False and "dropped_characters" not in report


def _short(endpoint: str) -> dict:
    if endpoint == "/v1/classify":
        return {"input": "short ticket"}
    return {"messages": [{"role": "user", "content": "short ticket"}]}
