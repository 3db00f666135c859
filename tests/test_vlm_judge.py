"""VLMJudgeReward: expected-score maths against independent references, batching, both reward conventions, the HTTP
backend against a loopback server serving the tiny judge."""

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from trl_ext.rewards import LocalVLMJudge, OpenAICompatibleJudge, VLMJudgeReward
from trl_ext.rewards.vlm_judge import JUDGE_PROMPTS, JudgeRequest, JudgeResult, template_for, template_name
from trl_ext.testing import build_tiny_tokenizer, save_tiny_qwen3_vl


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    return save_tiny_qwen3_vl(tmp_path_factory.mktemp("judge") / "tiny_qwen3_vl")


@pytest.fixture(scope="module")
def judge(judge_dir):
    return LocalVLMJudge.from_pretrained(str(judge_dir), device="cpu")


def _images():
    # different sizes and modes, as real benchmark images come
    return [
        Image.new("RGB", (64, 48), (200, 30, 30)),
        Image.new("RGBA", (40, 90), (10, 200, 10, 128)),
        Image.new("P", (128, 64), 3),
        Image.new("L", (70, 70), 90),
    ]


def test_loads_through_hub_without_torchvision(judge):
    assert type(judge.model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(judge.processor).__name__ == "Qwen3VLProcessor"
    assert judge.processor.video_processor is None


def _independent_expected_score(judge, request):
    """Σ p·d from two separate unbatched forwards (after "Score: " and after "Score: 1"), digit ids from encoding each
    digit on its own -- not the implementation's single forward reading positions -2 and -1."""
    processor, model = judge.processor, judge.model
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}] * len(request.images) + [{"type": "text", "text": request.text}],
        }
    ]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    digit = {d: processor.tokenizer.encode(str(d), add_special_tokens=False) for d in range(10)}
    assert all(len(ids) == 1 for ids in digit.values())

    def next_token_probabilities(text):
        inputs = processor(text=[text], images=[request.images], return_tensors="pt")
        with torch.no_grad():
            return torch.softmax(model(**inputs).logits[0, -1].double(), dim=-1)

    after_prefix = next_token_probabilities(prompt + "Score: ")
    after_one = next_token_probabilities(prompt + "Score: 1")
    p = {d: after_prefix[digit[d][0]].item() for d in range(10)}
    p_zero_after_one = after_one[digit[0][0]].item()
    probability = {d: p[d] for d in range(10)}
    probability[1] = p[1] * (1 - p_zero_after_one)
    probability[10] = p[1] * p_zero_after_one
    mass = sum(probability.values())
    return sum(d * q for d, q in probability.items()) / mass, mass


def test_expected_score_equals_sum_of_p_times_d_from_the_logits(judge):
    reward = VLMJudgeReward(judge, mode="expected", min_digit_mass=0.0, batch_size=4)
    images = _images()
    prompts = ["make the sky red", "add snow", "remove the cup", "turn on the lamp"]
    scores = reward(prompts, images=images, category=["physics", "environment", "referential", "causal"])
    for i in range(4):
        request = reward.build_request(prompts[i], images[i], ["physics", "environment", "referential", "causal"][i])
        expected, mass = _independent_expected_score(judge, request)
        assert scores[i] == pytest.approx(expected, abs=1e-4)
        assert reward.last_outputs[i].digit_mass == pytest.approx(mass, rel=1e-3)
        assert 0 <= scores[i] <= 10


class _LogitModel(torch.nn.Module):
    """A stand-in judge whose logits are set by hand at the last two positions."""

    def __init__(self, vocab_size, before_last, last):
        super().__init__()
        self.vocab_size, self.before_last, self.last = vocab_size, before_last, last
        self.config = SimpleNamespace()

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, input_ids, attention_mask=None, **kwargs):
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], self.vocab_size)
        for token, value in self.before_last.items():
            logits[:, -2, token] = value
        for token, value in self.last.items():
            logits[:, -1, token] = value
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize(
    "before_last, last, expected",
    [
        ({"3": 50.0, "7": 50.0}, {}, 5.0),  # P(3) = P(7) = 1/2
        ({"1": 50.0}, {"0": 50.0}, 10.0),  # "1" then surely "0": ten
        ({"2": 50.0, "1": 50.0}, {"0": 50.0}, 6.0),  # P(2) = P(10) = 1/2
        ({"9": 50.0 + math.log(3), "0": 50.0}, {}, 6.75),  # P(9) = 3/4, P(0) = 1/4
    ],
)
def test_expected_score_on_hand_set_logits(before_last, last, expected):
    tokenizer = build_tiny_tokenizer()
    ids = lambda table: {tokenizer.convert_tokens_to_ids(k): v for k, v in table.items()}  # noqa: E731
    backend = LocalVLMJudge(_LogitModel(len(tokenizer), ids(before_last), ids(last)), tokenizer)
    reward = VLMJudgeReward(backend, mode="expected")
    assert reward(["q"], completions=["an answer"]) == [pytest.approx(expected, abs=1e-5)]


def test_low_digit_mass_is_unscored_and_counted():
    tokenizer = build_tiny_tokenizer()  # uniform logits: the digits hold 10/263 of the probability
    backend = LocalVLMJudge(_LogitModel(len(tokenizer), {}, {}), tokenizer)
    reward = VLMJudgeReward(backend, mode="expected", min_digit_mass=0.5)
    assert reward(["q", "r"], completions=["a", "b"]) == [None, None]
    assert reward.low_digit_mass == 2
    assert reward.last_components["low_digit_mass"] == 2
    # P(d) = 1/V for d = 0..9, and P(1) splits into P(1) + P(10) without changing the mass
    assert reward.last_outputs[0].digit_mass == pytest.approx(10 / len(tokenizer), rel=1e-5)


def test_batched_and_one_at_a_time_agree(judge):
    images, prompts = _images(), ["a", "make it much brighter", "b", "replace the dog by a cat"]
    batched = VLMJudgeReward(judge, min_digit_mass=0.0, batch_size=4, compare_with_original=True)
    single = VLMJudgeReward(judge, min_digit_mass=0.0, batch_size=1, compare_with_original=True)
    sources = list(reversed(images))
    a = batched(prompts, images=images, source_image=sources)
    b = single(prompts, images=images, source_image=sources)
    assert a == pytest.approx(b, abs=1e-5)


class _ScriptedJudge:
    name = "scripted"

    def __init__(self, answers):
        self.answers = answers
        self.seen: list[JudgeRequest] = []

    def generate_answers(self, requests):
        self.seen.extend(requests)
        answers = [self.answers[len(self.seen) - len(requests) + i] for i in range(len(requests))]
        return [JudgeResult(text=a, error="HTTP 500" if a is None else None) for a in answers]


def test_generate_mode_never_turns_a_failure_into_a_number():
    answers = ["Score: 8", "I can't judge this.", "The edit is fine: 3/10", None, "Score: 11"]
    reward = VLMJudgeReward(_ScriptedJudge(answers), mode="generate", batch_size=2)
    image = Image.new("RGB", (32, 32))
    scores = reward(["p"] * 5, images=[image] * 5)
    assert scores == [8.0, None, 3.0, None, None]
    assert (reward.parse_failures, reward.judge_errors) == (2, 1)
    assert reward.last_outputs[1].text == "I can't judge this."
    assert reward.last_outputs[3].error == "HTTP 500"
    assert reward.last_components["unscored_count"] == 3
    # the reason of each parse failure: no score at all, or one out of range
    assert reward.last_outputs[1].error == "no unambiguous score in the answer"
    assert reward.last_outputs[4].error == "the score 11 after 'Score:' in the answer is out of range 0..10"


def test_expected_mode_needs_probabilities():
    with pytest.raises(ValueError, match="probabilities"):
        VLMJudgeReward(_ScriptedJudge([]), mode="expected")


def test_generate_mode_needs_answers():
    """A backend with probabilities only (no `generate_answers`) is refused for mode="generate" when the reward is
    built, not on its first call."""

    class DigitsOnly:
        name = "digits-only"

        def score_digits(self, requests):
            return [JudgeResult(probabilities=[1.0] + [0.0] * 10) for _ in requests]

    assert VLMJudgeReward(DigitsOnly(), mode="expected")(["q"], completions=["a"]) == [0.0]
    with pytest.raises(ValueError, match="generate_answers"):
        VLMJudgeReward(DigitsOnly(), mode="generate")


def test_a_backend_result_with_neither_value_nor_error_is_refused():
    """A backend must say why it has no answer: a result with neither `text` nor `error` (or one result missing) is an
    error, not an unscored sample."""

    class Silent:
        name = "silent"

        def generate_answers(self, requests):
            return [JudgeResult() for _ in requests]

    with pytest.raises(ValueError, match="neither"):
        VLMJudgeReward(Silent(), mode="generate")(["q"], completions=["a"])


def test_template_functions_pick_the_documented_template():
    """`prompt_template` wins, then "answer" for a text answer, the category's own template, else "generic"."""
    assert template_name("physics") == "physics" and template_name("weather") == "generic"
    assert template_name("weather", templates={"weather": "Rate {instruction}"}) == "weather"
    assert template_name("physics", text_answer=True) == "answer"
    assert template_name("physics", prompt_template="causal", text_answer=True) == "causal"
    assert template_for("weather", templates={"weather": "Rate {instruction}"}) == "Rate {instruction}"
    assert template_for("weather") == JUDGE_PROMPTS["generic"]


def test_text_reward_in_trl_convention(judge):
    """Called the way TRL's GRPOTrainer calls reward functions: conversational prompts and completions, the dataset
    columns (here `image`, `category`) and trainer hooks as keyword arguments."""
    logged = {}
    reward = VLMJudgeReward(judge, min_digit_mass=0.0)
    prompts = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]] * 2
    completions = [[{"role": "assistant", "content": "Red."}], [{"role": "assistant", "content": "Blue."}]]
    scores = reward(
        prompts=prompts,
        completions=completions,
        completion_ids=[[1], [2]],
        image=[Image.new("RGB", (32, 32), (255, 0, 0))] * 2,
        category=["physics", "physics"],
        trainer_state=None,
        log_extra=lambda column, values: logged.setdefault(column, values),
        log_metric=lambda name, value: None,
    )
    assert len(scores) == 2 and all(isinstance(s, float) and 0 <= s <= 10 for s in scores)
    assert scores[0] != scores[1]  # the answer is what is judged
    assert logged["judge_text"] == ["", ""]
    assert "Red." in reward.build_request("What colour is it?", None, response="Red.").text


def test_image_reward_the_way_flow_rtpo_calls_it(judge):
    """FlowRTPOTrainer (trainers/loop.py `_score`) calls `fn(prompts=..., images=<(B, 3, H, W) float tensor in [0, 1]>,
    **columns)` without completions."""
    reward = VLMJudgeReward(judge, min_digit_mass=0.0, scale=0.1)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scores = reward(prompts=["a red cat", "a blue dog", "a lamp"], images=images)
    assert len(scores) == 3 and all(isinstance(s, float) and 0 <= s <= 1 for s in scores)
    pil = [Image.fromarray((im.permute(1, 2, 0) * 255).round().byte().numpy()) for im in images]
    assert reward(prompts=["a red cat", "a blue dog", "a lamp"], images=pil) == pytest.approx(scores, abs=1e-6)


def test_templates_reference_and_original(tmp_path):
    template_file = tmp_path / "mine.txt"
    template_file.write_text('Instruction: {instruction} {reference_block} Reply as JSON {"score": N}.')
    reward = VLMJudgeReward(_ScriptedJudge([]), mode="generate", templates={"mine": str(template_file)})
    request = reward.build_request("add rain", Image.new("RGB", (8, 8)), category="mine", reference="wet streets")
    assert request.text.startswith("Instruction: add rain Expected outcome: wet streets")
    assert request.text.endswith('{"score": N}.')
    assert "physical" in reward.build_request("x", Image.new("RGB", (8, 8)), category="physics").text
    assert "strict judge" in reward.build_request("x", Image.new("RGB", (8, 8)), category="unknown").text
    original = VLMJudgeReward(_ScriptedJudge([]), mode="generate", compare_with_original=True)
    source, edit = Image.new("RGB", (8, 8), 1), Image.new("RGB", (8, 8), 2)
    assert original.build_request("x", edit, source_image=source).images == [source, edit]
    with pytest.raises(ValueError, match="Unknown judge prompt"):
        VLMJudgeReward(_ScriptedJudge([]), mode="generate", prompt_template="nope")


def test_generate_mode_with_the_tiny_judge(judge):
    judge.max_new_tokens = 6
    reward = VLMJudgeReward(judge, mode="generate", batch_size=2)
    scores = reward(["make it red", "make it blue"], images=_images()[:2])
    # a random judge writes noise: each sample is a parsed score or None, and the raw text is kept
    for score, output in zip(scores, reward.last_outputs):
        assert isinstance(output.text, str)
        assert (score is None) == (output.status == "parse_failure")


# ---- OpenAI-compatible backend against a loopback server -------------------------------------------------------------


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


def test_http_judge_scores_like_the_local_one(judge, served):
    url, state = served()
    remote = VLMJudgeReward(OpenAICompatibleJudge(url, "tiny", timeout=10, max_retries=0), mode="generate")
    local = VLMJudgeReward(judge, min_digit_mass=0.0)
    images, prompts = _images()[:3], ["make it red", "add snow", "a lamp"]
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


def _image_requests(reward, n=4):
    prompts, categories = (
        ["make the sky red", "add snow", "remove the cup", "turn on the lamp"],
        [
            "physics",
            "environment",
            "referential",
            "causal",
        ],
    )
    return [reward.build_request(prompts[i], _images()[i], categories[i]) for i in range(n)]


def test_http_expected_mode_reads_the_same_distribution_as_the_local_judge(digit_judge, served):
    """The server writes "Score: 1" and the next token (so P(10) = P(1)·P(0 | 1) is known); its top-20 log-softmax,
    from unbatched forwards of each prefix, against the local judge's single batched forward of prompt + "Score: 1".
    Both are float32 logits of the same token sequences (the byte-level tokenizer has no merges); the differences are
    float32 rounding and left padding, ~1e-7 on probabilities ~0.04-0.12, so abs 1e-5 on P and 1e-4 on the score."""
    url, state = served(local=digit_judge, first_digit=1)
    http = OpenAICompatibleJudge(url, "tiny", timeout=30, max_retries=0)
    requests = _image_requests(VLMJudgeReward(digit_judge))
    results = http.score_digits(requests)
    remote = torch.tensor([r.probabilities for r in results], dtype=torch.float64)
    local = digit_judge.digit_probabilities(requests).double()
    assert [r.error for r in results] == [None] * 4 and all(r.text.startswith("Score: 1") for r in results)
    assert all(body["logprobs"] is True and body["top_logprobs"] == 20 for body in state["bodies"])
    assert (local.sum(1) > 0.5).all()  # most of the mass is on the digits, all of them within the top 20
    assert torch.allclose(remote, local, atol=1e-5, rtol=0), (remote - local).abs().max()

    remote_reward = VLMJudgeReward(http, mode="expected", batch_size=4)
    local_reward = VLMJudgeReward(digit_judge, mode="expected", batch_size=4)
    prompts, images = ["make the sky red", "add snow", "remove the cup"], _images()[:3]
    remote_scores, local_scores = remote_reward(prompts, images=images), local_reward(prompts, images=images)
    assert all(isinstance(score, float) for score in remote_scores)
    assert remote_scores == pytest.approx(local_scores, abs=1e-4)


def test_http_expected_mode_when_the_judge_writes_another_digit(digit_judge, served):
    """The judge's own (most likely) digit: where it is not "1", P(0 | "1") is unknown, so the whole "1" mass stays
    on 1 and P(10) is 0 (this tokenizer has no "10" token): local P(1) + P(10) and 0."""
    url, _ = served(local=digit_judge)
    http = OpenAICompatibleJudge(url, "tiny", timeout=30, max_retries=0)
    requests = _image_requests(VLMJudgeReward(digit_judge))
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


def test_http_expected_reward_end_to_end_is_a_score_or_none(digit_judge, served):
    url, state = served(local=digit_judge)
    reward = VLMJudgeReward(OpenAICompatibleJudge(url, "tiny", timeout=30, max_retries=0), mode="expected")
    scores = reward(["a red cat", "a blue dog", "a lamp"], images=_images()[:3])
    assert all(isinstance(s, float) and 0 <= s <= 10 for s in scores), scores
    assert reward.last_components["unscored_count"] == 0 and state["requests"] == 3

    # the first request fails (503, no retry), the second is scored: None and a float, never a default
    url, state = served(local=digit_judge, failures_before_success=1)
    backend = OpenAICompatibleJudge(url, "tiny", timeout=30, max_retries=0, max_workers=1)
    reward = VLMJudgeReward(backend, mode="expected", low=2, high=8, min_digit_mass=0.3)
    scores = reward(["a red cat", "a blue dog"], images=_images()[:2])
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
