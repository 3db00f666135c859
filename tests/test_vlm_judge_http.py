"""The HTTP judge (`OpenAICompatibleJudge`) against a loopback server serving the tiny local judge: the same scores,
the expected score from hand-written and served log-probabilities, bounded retries, per-request deadlines."""

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from PIL import Image

from trl_ext.rewards import LocalVLMJudge, OpenAICompatibleJudge, VLMJudgeReward
from trl_ext.rewards.vlm_judge import JudgeRequest


def _chat_logprobs(local_judge, request, top_k, first_digit=None):
    """`choices[0].logprobs.content` as an OpenAI-compatible server returns it for `logprobs=True, top_logprobs=top_k`
    when the judge answers in the asked format: it writes "Score: ", then its most likely digit (or `first_digit`),
    then its most likely token that is not a digit (the number ends in range, as a valid answer's does); each entry
    holds the written token and the top-k of the model's log-softmax over the whole vocabulary at that position, from
    an unbatched forward of the prompt and the answer so far."""
    processor, model, tokenizer = local_judge.processor, local_judge.model, local_judge.tokenizer
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}] * len(request.images) + [{"type": "text", "text": request.text}],
        }
    ]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    digits = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]

    def log_softmax_after(answer_ids):
        text = prompt + tokenizer.decode(answer_ids)
        inputs = processor(text=[text], images=[request.images] if request.images else None, return_tensors="pt")
        with torch.no_grad():
            return torch.log_softmax(model(**inputs).logits[0, -1].double(), dim=-1)

    forced = tokenizer.encode("Score: ", add_special_tokens=False)
    answer, content = [], []
    for step in range(len(forced) + 2):
        log_probs = log_softmax_after(answer)
        if step < len(forced):
            token = forced[step]
        elif step == len(forced):
            token = digits[first_digit] if first_digit is not None else digits[int(log_probs[digits].argmax())]
        else:
            token = int(log_probs.index_fill(0, torch.tensor(digits), -math.inf).argmax())
        top = torch.topk(log_probs, top_k)
        content.append(
            {
                "token": tokenizer.decode([token]),
                "logprob": float(log_probs[token]),
                "bytes": list(tokenizer.decode([token]).encode()),
                "top_logprobs": [
                    {
                        "token": tokenizer.decode([t]),
                        "logprob": float(lp),
                        "bytes": list(tokenizer.decode([t]).encode()),
                    }
                    for lp, t in zip(top.values.tolist(), top.indices.tolist())
                ],
            }
        )
        answer.append(token)
    return content


def _serve_judge(local_judge, failures_before_success=0, hang_seconds=0.0, first_digit=None):
    """A chat-completions server on 127.0.0.1 that answers with the tiny judge (text "Score: N" from its expected
    score, so the answer is deterministic; with `logprobs`, the answer and top-k log-probabilities of
    [`_chat_logprobs`]), failing the first requests with HTTP 503 when asked."""
    import base64
    import io
    import time

    state = {"requests": 0, "bodies": []}
    reward = VLMJudgeReward(local_judge, min_digit_mass=0.0)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            state["requests"] += 1
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["bodies"].append(body)
            if state["requests"] <= failures_before_success:
                self.send_response(503)
                self.end_headers()
                return
            if hang_seconds:
                time.sleep(hang_seconds)
            content = body["messages"][0]["content"]
            images = [
                Image.open(io.BytesIO(base64.b64decode(part["image_url"]["url"].split(",", 1)[1])))
                for part in content
                if part["type"] == "image_url"
            ]
            text = next(part["text"] for part in content if part["type"] == "text")
            request = JudgeRequest(text=text, images=images)
            if body.get("logprobs"):
                tokens = _chat_logprobs(local_judge, request, body["top_logprobs"], first_digit)
                message = "".join(entry["token"] for entry in tokens)
                choice = {"message": {"role": "assistant", "content": message}, "logprobs": {"content": tokens}}
            else:
                score = reward.judge_requests([request])[0].score
                choice = {"message": {"role": "assistant", "content": f"Score: {round(score)}"}}
            data = json.dumps({"choices": [choice]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return _start_server(Handler) + (state,)


def _start_server(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = False  # server_close() joins the handler threads: nothing outlives the test
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


def _stop_servers(servers):
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


@pytest.fixture
def served(judge):
    servers = []

    def start(local=None, **kwargs):
        server, thread, state = _serve_judge(local if local is not None else judge, **kwargs)
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/v1", state

    yield start
    _stop_servers(servers)


def test_http_judge_scores_like_the_local_one(judge, served, judge_images):
    url, state = served()
    remote = VLMJudgeReward(OpenAICompatibleJudge(url, "tiny", timeout=10, max_retries=0), mode="generate")
    local = VLMJudgeReward(judge, min_digit_mass=0.0)
    images, prompts = judge_images[:3], ["make it red", "add snow", "a lamp"]
    assert remote(prompts, images=images) == [float(round(s)) for s in local(prompts, images=images)]
    assert state["requests"] == 3


def test_http_judge_retries_then_succeeds(served):
    url, state = served(failures_before_success=2)
    backend = OpenAICompatibleJudge(url, "tiny", timeout=10, max_retries=2, retry_backoff=0.01, max_workers=1)
    reward = VLMJudgeReward(backend, mode="generate")
    assert reward(["x"], images=[Image.new("RGB", (32, 32))])[0] is not None
    assert state["requests"] == 3


def test_http_judge_gives_up_after_bounded_retries_and_timeouts(served):
    url, state = served(failures_before_success=100)
    backend = OpenAICompatibleJudge(url, "tiny", timeout=5, max_retries=2, retry_backoff=0.01)
    reward = VLMJudgeReward(backend, mode="generate")
    assert reward(["x"], images=[Image.new("RGB", (32, 32))]) == [None]
    assert state["requests"] == 3 and reward.judge_errors == 1
    assert "503" in reward.last_outputs[0].error

    url, state = served(hang_seconds=1.0)
    backend = OpenAICompatibleJudge(url, "tiny", timeout=0.2, max_retries=1, retry_backoff=0.01)
    reward = VLMJudgeReward(backend, mode="generate")
    assert reward(["x"], images=[Image.new("RGB", (32, 32))]) == [None]
    assert state["requests"] == 2
    assert "timed out" in reward.last_outputs[0].error.lower()


# ---- expected mode over HTTP: top_logprobs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_judge(judge_dir):
    """The tiny judge with +4 added to the digit logits (a bias on its LM head): the ten digits then lead the
    distribution at every position (about 0.7 of the mass after "Score: "), so the top-20 alternatives a chat server
    returns hold every digit and P("0" | "1"), and the HTTP reading can match the local one exactly."""
    local = LocalVLMJudge.from_pretrained(str(judge_dir), device="cpu")
    head = local.model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[local.digit_token_ids()] = 4.0
    local.model.lm_head = biased
    return local


def _image_requests(reward, images, n=4):
    prompts, categories = (
        ["make the sky red", "add snow", "remove the cup", "turn on the lamp"],
        [
            "physics",
            "environment",
            "referential",
            "causal",
        ],
    )
    return [reward.build_request(prompts[i], images[i], categories[i]) for i in range(n)]


def test_http_expected_mode_reads_the_same_distribution_as_the_local_judge(digit_judge, served, judge_images):
    """The server writes "Score: 1" and the next token (so P(10) = P(1)·P(0 | 1) is known); its top-20 log-softmax,
    from unbatched forwards of each prefix, against the local judge's single batched forward of prompt + "Score: 1".
    Both are float32 logits of the same token sequences (the byte-level tokenizer has no merges); the differences are
    float32 rounding and left padding, ~1e-7 on probabilities ~0.04-0.12, so abs 1e-5 on P and 1e-4 on the score."""
    url, state = served(local=digit_judge, first_digit=1)
    http = OpenAICompatibleJudge(url, "tiny", timeout=30, max_retries=0)
    requests = _image_requests(VLMJudgeReward(digit_judge), judge_images)
    results = http.score_digits(requests)
    remote = torch.tensor([r.probabilities for r in results], dtype=torch.float64)
    local = digit_judge.digit_probabilities(requests).double()
    assert [r.error for r in results] == [None] * 4 and all(r.text.startswith("Score: 1") for r in results)
    assert all(body["logprobs"] is True and body["top_logprobs"] == 20 for body in state["bodies"])
    assert (local.sum(1) > 0.5).all()  # most of the mass is on the digits, all of them within the top 20
    assert torch.allclose(remote, local, atol=1e-5, rtol=0), (remote - local).abs().max()

    remote_reward = VLMJudgeReward(http, mode="expected", batch_size=4)
    local_reward = VLMJudgeReward(digit_judge, mode="expected", batch_size=4)
    prompts, images = ["make the sky red", "add snow", "remove the cup"], judge_images[:3]
    remote_scores, local_scores = remote_reward(prompts, images=images), local_reward(prompts, images=images)
    assert all(isinstance(score, float) for score in remote_scores)
    assert remote_scores == pytest.approx(local_scores, abs=1e-4)


def test_http_expected_mode_when_the_judge_writes_another_digit(digit_judge, served, judge_images):
    """The judge's own (most likely) digit: where it is not "1", P(0 | "1") is unknown, so the whole "1" mass stays
    on 1 and P(10) is 0 (this tokenizer has no "10" token): local P(1) + P(10) and 0."""
    url, _ = served(local=digit_judge)
    http = OpenAICompatibleJudge(url, "tiny", timeout=30, max_retries=0)
    requests = _image_requests(VLMJudgeReward(digit_judge), judge_images)
    results = http.score_digits(requests)
    remote = torch.tensor([r.probabilities for r in results], dtype=torch.float64)
    local = digit_judge.digit_probabilities(requests).double()
    written = [r.text[len("Score: ")] for r in results]
    assert written != ["1"] * 4
    for i, digit in enumerate(written):
        expected = local[i].clone()
        if digit != "1":
            expected[1], expected[10] = local[i, 1] + local[i, 10], 0.0
        assert torch.allclose(remote[i], expected, atol=1e-5, rtol=0), (i, digit, remote[i], expected)


def test_http_expected_reward_end_to_end_is_a_score_or_none(digit_judge, served, judge_images):
    url, state = served(local=digit_judge)
    reward = VLMJudgeReward(OpenAICompatibleJudge(url, "tiny", timeout=30, max_retries=0), mode="expected")
    scores = reward(["a red cat", "a blue dog", "a lamp"], images=judge_images[:3])
    assert all(isinstance(s, float) and 0 <= s <= 10 for s in scores), scores
    assert reward.last_components["unscored_count"] == 0 and state["requests"] == 3

    # the first request fails (503, no retry), the second is scored: None and a float, never a default
    url, state = served(local=digit_judge, failures_before_success=1)
    backend = OpenAICompatibleJudge(url, "tiny", timeout=30, max_retries=0, max_workers=1)
    reward = VLMJudgeReward(backend, mode="expected", low=2, high=8, min_digit_mass=0.3)
    scores = reward(["a red cat", "a blue dog"], images=judge_images[:2])
    assert scores[0] is None and isinstance(scores[1], float) and 2 <= scores[1] <= 8
    assert reward.judge_errors == 1 and "503" in reward.last_outputs[0].error
    assert math.isnan(reward.last_components["digit_mass"][0])


# scripted servers: hand-written logprobs, hand-computed answers


def _logprobs_entry(token, alternatives):
    """One `logprobs.content` entry: the written `token` and its `(token, probability)` alternatives."""
    top = [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in alternatives]
    chosen = dict(alternatives).get(token, 1e-4)
    return {"token": token, "logprob": math.log(chosen), "bytes": list(token.encode()), "top_logprobs": top}


def _chat_answer(entries):
    tokens = [_logprobs_entry(token, alternatives) for token, alternatives in entries]
    text = "".join(token for token, _ in entries)
    return {"choices": [{"message": {"role": "assistant", "content": text}, "logprobs": {"content": tokens}}]}


@pytest.fixture
def scripted():
    """A chat-completions server that answers with the given replies in turn (an int is an HTTP error status)."""
    servers = []

    def start(replies):
        state = {"bodies": []}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                state["bodies"].append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                reply = replies[min(len(state["bodies"]), len(replies)) - 1]
                if isinstance(reply, int):
                    self.send_response(reply)
                    self.end_headers()
                    return
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server, thread = _start_server(Handler)
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/v1", state

    yield start
    _stop_servers(servers)


_SURE = [("Score", 1.0)]


@pytest.mark.parametrize(
    "entries, probabilities, score",
    [
        # one tokenizer writes " 7" after "Score:", another "7" after "Score: ": both count for 7
        (
            [("Score", _SURE), (":", [(":", 1.0)]), (" 7", [(" 7", 0.5), ("7", 0.2), (" 8", 0.1), (" seven", 0.2)])],
            {7: 0.7, 8: 0.1},
            (4.9 + 0.8) / 0.8,
        ),
        ([("Score: ", [("Score: ", 1.0)]), ("7", [("7", 0.6), (" 6", 0.3), ("x", 0.1)])], {7: 0.6, 6: 0.3}, 6.0 / 0.9),
        # "Score:", " ", "7" (digits split from the space): read at "7", not at the space (whose "7" is "Score:7")
        (
            [("Score", _SURE), (":", [(":", 1.0)]), (" ", [(" ", 0.9), ("7", 0.1)]), ("7", [("7", 0.5), ("8", 0.5)])],
            {7: 0.5, 8: 0.5},
            7.5,
        ),
        # "10" as one token
        (
            [("Score:", [("Score:", 1.0)]), (" 10", [(" 10", 0.6), (" 9", 0.3), (" 1", 0.1)])],
            {10: 0.6, 9: 0.3, 1: 0.1},
            8.8,
        ),
        # "1" then "0": P(10) = 0.6·0.75, P(1) = 0.6·0.25
        (
            [("Score: ", [("Score: ", 1.0)]), ("1", [("1", 0.6), ("2", 0.4)]), ("0", [("0", 0.75), ("/", 0.25)])],
            {10: 0.45, 1: 0.15, 2: 0.4},
            4.5 + 0.15 + 0.8,
        ),
        # "7" written: what follows is not P(0 | 1), so the "1" mass stays on 1 (not 0.2·0.9 on 10)
        (
            [("Score: ", [("Score: ", 1.0)]), ("7", [("7", 0.8), ("1", 0.2)]), ("/", [("0", 0.9), ("/", 0.1)])],
            {7: 0.8, 1: 0.2},
            5.8,
        ),
        # Markdown around the prefix
        (
            [
                ("**", [("**", 1.0)]),
                ("Score", _SURE),
                (":**", [(":**", 1.0)]),
                (" ", [(" ", 1.0)]),
                ("4", [("4", 0.9)]),
            ],
            {4: 0.9},
            4.0,
        ),
    ],
)
def test_http_expected_mode_on_hand_written_logprobs(scripted, entries, probabilities, score):
    url, state = scripted([_chat_answer(entries)])
    backend = OpenAICompatibleJudge(url, "judge", timeout=10, max_retries=0, top_logprobs=5)
    reward = VLMJudgeReward(backend, mode="expected")
    assert reward(["q"], completions=["an answer"]) == [pytest.approx(score, abs=1e-9)]
    expected = [probabilities.get(d, 0.0) for d in range(11)]
    assert backend.score_digits([JudgeRequest("q")])[0].probabilities == pytest.approx(expected, abs=1e-12)
    assert reward.last_outputs[0].digit_mass == pytest.approx(sum(expected), abs=1e-12)
    assert state["bodies"][0]["logprobs"] is True and state["bodies"][0]["top_logprobs"] == 5


def test_http_expected_mode_never_turns_a_failure_into_a_number(scripted):
    no_prefix = _chat_answer([("I", [("I", 1.0)]), (" rate", [(" rate", 1.0)]), (" 7", [(" 7", 0.9), (" 8", 0.1)])])
    no_digit = _chat_answer([("Score: ", [("Score: ", 1.0)]), ("N/A", [("N/A", 0.7), ("none", 0.3)])])
    low_mass = _chat_answer([("Score: ", [("Score: ", 1.0)]), ("7", [("7", 0.2), ("none", 0.8)])])
    no_top = _chat_answer([("Score: ", [("Score: ", 1.0)]), ("7", [("7", 1.0)])])
    for entry in no_top["choices"][0]["logprobs"]["content"]:
        del entry["top_logprobs"]
    no_logprobs = {"choices": [{"message": {"role": "assistant", "content": "Score: 7"}, "logprobs": None}]}
    replies = [no_prefix, no_digit, low_mass, no_top, no_logprobs, 400]
    url, _ = scripted(replies)
    backend = OpenAICompatibleJudge(url, "judge", timeout=10, max_retries=0, max_workers=1)
    reward = VLMJudgeReward(backend, mode="expected", batch_size=6)
    assert reward(["q"] * 6, completions=["a"] * 6) == [None] * 6
    statuses = [o.status for o in reward.last_outputs]
    assert statuses == ["parse_failure", "parse_failure", "low_digit_mass", "error", "error", "error"]
    assert (reward.parse_failures, reward.low_digit_mass, reward.judge_errors) == (2, 1, 3)
    errors = [o.error for o in reward.last_outputs]
    assert "no number after 'Score:'" in errors[0] and "no number" in errors[1] and errors[2] is None
    assert "malformed" in errors[3] and "top_logprobs" in errors[3]
    assert "malformed" in errors[4] and "logprobs" in errors[4] and "HTTP 400" in errors[5]
    assert reward.last_outputs[0].text == "I rate 7" and reward.last_outputs[2].digit_mass == pytest.approx(0.2)


def test_http_expected_mode_retries_then_scores(scripted):
    answer = _chat_answer([("Score: ", [("Score: ", 1.0)]), ("6", [("6", 0.5), ("8", 0.5)])])
    url, state = scripted([500, answer])
    backend = OpenAICompatibleJudge(url, "judge", timeout=10, max_retries=1, retry_backoff=0.01)
    reward = VLMJudgeReward(backend, mode="expected")
    assert reward(["q"], completions=["a"]) == [pytest.approx(7.0)]
    assert len(state["bodies"]) == 2 and reward.judge_errors == 0


@pytest.mark.parametrize("top_logprobs", [0, 21, 2.5, True])
def test_http_top_logprobs_is_checked(top_logprobs):
    with pytest.raises(ValueError, match="top_logprobs"):
        OpenAICompatibleJudge("http://127.0.0.1:1/v1", "judge", top_logprobs=top_logprobs)


# ---- the timeout is a deadline per request, however slowly the server answers ----------------------------------------


@pytest.fixture
def trickling():
    """A server that sends a complete, valid "Score: 7" answer (status line and headers included) one byte every
    `interval` seconds: every socket read returns well within any timeout, only a deadline can stop it."""
    servers = []

    def start(interval=0.05):
        import time

        state = {"requests": 0}
        answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Score: 7"}}]}).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(answer)}\r\n\r\n"

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                state["requests"] += 1
                self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    for byte in head.encode() + answer:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(interval)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up: what a deadline is for
                self.close_connection = True

        server, thread = _start_server(Handler)
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/v1", state, (len(head) + len(answer)) * interval

    yield start
    _stop_servers(servers)


def test_http_timeout_is_a_deadline_per_request_not_per_read(trickling):
    import time

    url, state, trickle_seconds = trickling()
    assert trickle_seconds > 7  # the whole answer takes that long; each byte comes after 0.05 s
    backend = OpenAICompatibleJudge(url, "judge", timeout=0.5, max_retries=2, retry_backoff=0.05, max_workers=1)
    reward = VLMJudgeReward(backend, mode="generate")
    began = time.monotonic()
    assert reward(["q"], completions=["a"]) == [None]
    elapsed = time.monotonic() - began
    # three attempts of at most 0.5 s each and back-offs of 0.05 s and 0.1 s: 1.65 s, plus slack for a loaded machine
    # (one attempt without a deadline takes the whole trickle, over 7 s)
    assert state["requests"] == 3
    assert 1.5 <= elapsed < 1.65 + 1.5, elapsed
    assert reward.judge_errors == 1 and "timed out" in reward.last_outputs[0].error
    assert "0.5 s" in reward.last_outputs[0].error


def test_http_expected_mode_says_when_the_written_score_is_out_of_range(scripted):
    """ "Score: 11" on a 0..10 scale: a number was written, out of range. Whether the tokenizer writes "11" as one token
    (no digit among its alternatives, or a few) or as "1" then "1", the answer is unscored and the reason says so."""
    one_token = _chat_answer([("Score: ", [("Score: ", 1.0)]), ("11", [("11", 0.9), ("12", 0.1)])])
    with_digits = _chat_answer([("Score: ", [("Score: ", 1.0)]), ("11", [("11", 0.6), ("9", 0.4)])])
    split = _chat_answer(
        [("Score: ", [("Score: ", 1.0)]), ("1", [("1", 0.9), ("9", 0.1)]), ("1", [("1", 0.8), ("0", 0.2)])]
    )
    url, _ = scripted([one_token, with_digits, split])
    backend = OpenAICompatibleJudge(url, "judge", timeout=10, max_retries=0, max_workers=1)
    reward = VLMJudgeReward(backend, mode="expected", batch_size=3, min_digit_mass=0.0)
    assert reward(["q"] * 3, completions=["a"] * 3) == [None] * 3
    assert [o.status for o in reward.last_outputs] == ["parse_failure"] * 3
    for output in reward.last_outputs:
        assert output.text == "Score: 11"
        assert "out of range" in output.error and "11" in output.error and "no number" not in output.error
