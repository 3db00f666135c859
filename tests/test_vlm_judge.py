"""VLMJudgeReward with the local judge: expected-score maths against independent references, batching, both reward
conventions, templates (the HTTP backend: test_vlm_judge_http.py)."""

import math
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from trl_ext.rewards import LocalVLMJudge, VLMJudgeReward
from trl_ext.rewards.vlm_judge import JUDGE_PROMPTS, JudgeRequest, JudgeResult, template_for, template_name
from trl_ext.testing import build_tiny_tokenizer


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


def test_expected_score_equals_sum_of_p_times_d_from_the_logits(judge, judge_images):
    reward = VLMJudgeReward(judge, mode="expected", min_digit_mass=0.0, batch_size=4)
    images = judge_images
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


def test_batched_and_one_at_a_time_agree(judge, judge_images):
    images, prompts = judge_images, ["a", "make it much brighter", "b", "replace the dog by a cat"]
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


def test_generate_mode_with_the_tiny_judge(judge, judge_images):
    judge.max_new_tokens = 6
    reward = VLMJudgeReward(judge, mode="generate", batch_size=2)
    scores = reward(["make it red", "make it blue"], images=judge_images[:2])
    # a random judge writes noise: each sample is a parsed score or None, and the raw text is kept
    for score, output in zip(scores, reward.last_outputs):
        assert isinstance(output.text, str)
        assert (score is None) == (output.status == "parse_failure")


# ---- OpenAI-compatible backend against a loopback server -------------------------------------------------------------
