"""Real sizes: each trainer's published architecture (random weights) through its own `train()` in bf16.

    python benchmarks/real_size.py --trainer {sedd_ppo,flow_grpo,tprl,ppo} --device {cpu,cuda} [--steps N]
    accelerate launch --config_file accelerate_configs/deepspeed_zero2.yaml --num_processes 1 \\
        benchmarks/real_size.py --trainer ppo --device cuda --steps 1

Architectures from `trl_ext.testing.published` (the Hub ids they come from are printed): SEDD PPO on
`louaaron/sedd-small` (`--model louaaron/sedd-medium`), Flow-GRPO on `stabilityai/stable-diffusion-3.5-medium` (MMDiT +
LoRA, the three text encoders and the VAE), TPRL-GRPO on `Qwen/Qwen2.5-VL-3B-Instruct`, and token-level PPO with
`Qwen/Qwen2.5-1.5B-Instruct` as policy, reference, reward model and value model. Settings are a user's: bf16, gradient
checkpointing, LoRA where the method's published recipe uses it, and the recipe's lengths on CUDA; on CPU the lengths,
resolution and batch are reduced (and LoRA replaces full fine-tuning where the optimizer state alone would not fit in
24 GiB); every setting is printed and saved in the JSON.

Per optimizer step it prints the time, the peak memory (the process's peak RSS on CPU, reset at every step through
`/proc/self/clear_refs`; `torch.cuda.max_memory_allocated` on CUDA), samples and tokens (or images) per second, the
on-policy ratio deviation max |ρ - 1| of the first mini-batch (exactly 0 in exact arithmetic: is it still small in
bf16?) and whether any logged loss or gradient norm was non-finite. The rewards are a deterministic hash of each
completion (random weights write no meaningful text; the hash gives the group advantages a spread) and, for Flow-GRPO,
image brightness. The last line is a JSON object; `--output_json` also writes it to a file.
"""

import argparse
import json
import os
import platform
import tempfile
import time
import zlib

import torch
from transformers import TrainerCallback


TRAINERS = ("sedd_ppo", "flow_grpo", "tprl", "ppo")


def hash_reward(prompts, completions, **kwargs) -> list[float]:
    """A deterministic reward in [0, 1) from the completion's text (conversational completions: the last message)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [(zlib.crc32(text.encode()) % 1000) / 1000 for text in texts]


def brightness_reward(prompts, images, **kwargs) -> list[float]:
    """Mean pixel value of each generated image, in [0, 1]."""
    return [float(image.float().mean()) for image in images]


class RatioProbe:
    """Records max |exp(log_ratio) - 1| over the valid entries of the first policy-loss call of each step, by wrapping
    `clipped_surrogate_loss` where the loop trainers look it up (their first mini-batch is on-policy)."""

    def __init__(self):
        self.value: float | None = None

    def record(self, log_ratio: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if self.value is None:
            deviation = (log_ratio.detach().float().exp() - 1).abs()
            if mask is not None:
                deviation = deviation[mask.bool()]
            self.value = float(deviation.max()) if deviation.numel() else 0.0

    def wrap_loss(self, *modules) -> None:
        for module in modules:
            original = module.clipped_surrogate_loss

            def wrapped(log_ratio, *args, _original=original, **kwargs):
                self.record(log_ratio)
                return _original(log_ratio, *args, **kwargs)

            module.clipped_surrogate_loss = wrapped


class StepProbe(TrainerCallback):
    """Time, peak memory and logged non-finite values of every optimizer step."""

    def __init__(self, device: str, samples_per_step: int, tokens_per_sample: int, unit: str, ratio: RatioProbe):
        self.device, self.samples, self.tokens, self.unit, self.ratio = (
            device,
            samples_per_step,
            tokens_per_sample,
            unit,
            ratio,
        )
        self.rows, self.non_finite, self.start = [], False, 0.0

    def _reset_peak(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM, the peak RSS
                f.write("5")

    def _peak_gib(self) -> float:
        if self.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**30
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 2**20

    def on_step_begin(self, args, state, control, **kwargs):
        self._reset_peak()
        self.ratio.value = None
        self.start = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, value in (logs or {}).items():
            if (
                isinstance(value, float)
                and ("loss" in key or "grad_norm" in key)
                and not torch.isfinite(torch.tensor(value))
            ):
                self.non_finite = True

    def on_step_end(self, args, state, control, **kwargs):
        seconds = time.perf_counter() - self.start
        row = {
            "step": state.global_step,
            "seconds": round(seconds, 3),
            "peak_memory_gib": round(self._peak_gib(), 3),
            f"{self.unit}_per_second": round(
                self.samples * (self.tokens if self.unit == "tokens" else 1) / seconds, 3
            ),
            "first_minibatch_ratio_deviation": self.ratio.value,
        }
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def sedd_ppo(cli, device, dtype, workdir, ratio: RatioProbe):
    from datasets import Dataset

    import trl_ext.trainers.group_update as group_update
    from trl_ext import DiscreteDiffusionPPOConfig, DiscreteDiffusionPPOTrainer
    from trl_ext.testing.published import sedd_model
    from trl_ext.testing.text import build_tiny_tokenizer

    hub_id = cli.model or "louaaron/sedd-small"
    cuda = device == "cuda"
    settings = dict(
        max_prompt_length=64 if cuda else 32,
        max_completion_length=448 if cuda else 96,
        sampling_steps=128 if cuda else 16,
        num_generations=4,
        per_device_train_batch_size=16 if cuda else 4,
        num_sigma_samples=3,
        beta=0.04,
    )
    # SEDD's GPT-2 vocabulary (50257): the offline byte-level tokenizer grown to it, with its end-of-text token last
    tokenizer = build_tiny_tokenizer(50257)
    args = DiscreteDiffusionPPOConfig(
        **common(cli, workdir, gradient_checkpointing=False),
        **settings,
    )
    model = sedd_model(hub_id, length=1024, dtype=torch.float32)
    prompts = Dataset.from_dict({"prompt": [f"Prove that x^{i} + y = {i}." for i in range(64)]})
    ratio.wrap_loss(group_update)
    trainer = DiscreteDiffusionPPOTrainer(model, hash_reward, args, prompts, tokenizer)
    samples = settings["per_device_train_batch_size"]
    return trainer, hub_id, settings, samples, settings["max_completion_length"], "tokens"


def flow_grpo(cli, device, dtype, workdir, ratio: RatioProbe):
    import trl_ext.trainers.group_update as group_update
    from trl_ext import FlowGRPOConfig, FlowGRPOTrainer
    from trl_ext.testing.published import SD3_5_MEDIUM, sd3_5_medium_pipeline

    cuda = device == "cuda"
    settings = dict(
        resolution=512 if cuda else 128,
        num_inference_steps=10 if cuda else 2,
        num_generations=4 if cuda else 2,
        per_device_train_batch_size=8 if cuda else 2,
        max_sequence_length=256 if cuda else 77,
        lora_r=32,
        lora_alpha=64,
        beta=0.04,
        sample_steps=0,
    )
    args = FlowGRPOConfig(
        **common(cli, workdir, gradient_checkpointing=True),
        **settings,
    )
    pipeline = sd3_5_medium_pipeline(dtype, device)
    ratio.wrap_loss(group_update)
    prompts = [
        f"a photo of a {animal} on a {thing}" for animal in ("cat", "dog", "fox", "owl") for thing in ("boat", "car")
    ]
    trainer = FlowGRPOTrainer(pipeline, brightness_reward, args, prompts)
    return trainer, SD3_5_MEDIUM, settings, settings["per_device_train_batch_size"], 1, "images"


def tprl(cli, device, dtype, workdir, ratio: RatioProbe):
    from peft import LoraConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from trl_ext import TPRLGRPOConfig, TPRLGRPOTrainer
    from trl_ext.data.colour_shapes import colour_question_dataset
    from trl_ext.testing.published import QWEN2_5_VL_3B, qwen2_5_vl_3b
    from trl_ext.testing.text import build_tiny_tokenizer
    from trl_ext.testing.vision_language import build_qwen_vl_processor

    cuda = device == "cuda"
    settings = dict(
        max_completion_length=256 if cuda else 16,
        num_generations=8 if cuda else 2,
        per_device_train_batch_size=8 if cuda else 2,
        image_size=448 if cuda else 224,
        enable_perception_filtering=True,
        top_p_perception_tokens=0.4,
        enable_trajectory_reweighting=True,
        epsilon=0.2,
        epsilon_high=0.28,
        num_iterations=2,  # TRL then keeps the rollout's log-probabilities: the first mini-batch's ratio is measured
        lora=not cuda,
    )
    tokenizer = build_tiny_tokenizer(151936 - 271)  # Qwen's 151665 tokens; the embedding is padded to 151936
    processor = build_qwen_vl_processor(tokenizer, image_processor=Qwen2VLImageProcessorPil(max_pixels=448 * 448))
    trainer_settings = {k: v for k, v in settings.items() if k not in ("image_size", "lora")}
    args = TPRLGRPOConfig(
        **common(cli, workdir, gradient_checkpointing=True),
        **trainer_settings,
    )
    model = qwen2_5_vl_3b(tokenizer, dtype, device)
    peft_config = (
        LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
        if settings["lora"]
        else None
    )
    trainer = _ratio_probed(TPRLGRPOTrainer, ratio)(
        model=model,
        reward_funcs=hash_reward,
        args=args,
        train_dataset=colour_question_dataset(64, image_size=settings["image_size"]),
        processing_class=processor,
        peft_config=peft_config,
    )
    return (
        trainer,
        QWEN2_5_VL_3B,
        settings,
        settings["per_device_train_batch_size"],
        settings["max_completion_length"],
        "tokens",
    )


def _ratio_probed(trainer_class, ratio: RatioProbe):
    """`trainer_class` recording the first training forward's deviation from TRL's rollout log-probabilities."""

    class Probed(trainer_class):
        _rollout_probed = False

        def _generate_and_score_completions(self, inputs):
            self._rollout_probed = True  # the next training forward is the first on this rollout
            return super()._generate_and_score_completions(inputs)

        def _compute_loss(self, model, inputs):
            self._probe_inputs = inputs
            return super()._compute_loss(model, inputs)

        def _get_per_token_logps_and_entropies(self, *args, **kwargs):
            outputs = super()._get_per_token_logps_and_entropies(*args, **kwargs)
            inputs = getattr(self, "_probe_inputs", None)
            if torch.is_grad_enabled() and self._rollout_probed and inputs.get("old_per_token_logps") is not None:
                self._rollout_probed = False
                ratio.record(outputs[0] - inputs["old_per_token_logps"], inputs["completion_mask"])
            return outputs

    return Probed


def ppo(cli, device, dtype, workdir, ratio: RatioProbe):
    from datasets import Dataset
    from peft import LoraConfig

    import trl_ext.trainers.ppo.trainer as ppo_trainer
    from trl_ext import PPOConfig, PPOTrainer
    from trl_ext.testing.published import QWEN2_5_1_5B, qwen2_5_causal_lm
    from trl_ext.testing.text import build_tiny_tokenizer

    cuda = device == "cuda"
    settings = dict(
        response_length=53 if cuda else 16,  # TRL's PPOConfig default
        per_device_train_batch_size=16 if cuda else 2,
        num_ppo_epochs=4,
        num_mini_batches=1,
        lora=not cuda,
    )
    tokenizer = build_tiny_tokenizer(151936 - 271)
    policy = qwen2_5_causal_lm(tokenizer, dtype, device)
    reward_model = qwen2_5_causal_lm(tokenizer, dtype, device, num_labels=1)
    value_model = qwen2_5_causal_lm(tokenizer, dtype, device, num_labels=1)
    args = PPOConfig(
        num_sample_generations=0,
        **common(cli, workdir, gradient_checkpointing=True),
        **{k: v for k, v in settings.items() if k != "lora"},
    )
    peft_config = (
        LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
        if settings["lora"]
        else None
    )
    ratio.wrap_loss(ppo_trainer)
    prompts = Dataset.from_dict({"prompt": [f"Question {i}: say something." for i in range(64)]})
    trainer = PPOTrainer(
        args, tokenizer, policy, None, reward_model, prompts, value_model=value_model, peft_config=peft_config
    )
    samples = settings["per_device_train_batch_size"]
    return trainer, QWEN2_5_1_5B, settings, samples, settings["response_length"], "tokens"


def common(cli, workdir: str, gradient_checkpointing: bool) -> dict:
    """The training arguments every run shares: bf16, one log per step, nothing saved."""
    return dict(
        output_dir=workdir,
        max_steps=cli.steps,
        bf16=True,
        gradient_checkpointing=gradient_checkpointing,
        use_cpu=cli.device == "cpu",
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        learning_rate=1e-6,
    )


BUILDERS = {"sedd_ppo": sedd_ppo, "flow_grpo": flow_grpo, "tprl": tprl, "ppo": ppo}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainer", choices=TRAINERS, required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--model", default=None, help="sedd_ppo only: louaaron/sedd-small (default) or -medium")
    parser.add_argument("--output_json", default=None)
    cli = parser.parse_args()
    if cli.model and cli.trainer != "sedd_ppo":
        parser.error("--model chooses the SEDD checkpoint; the other trainers have one published size each.")
    if cli.device == "cpu":
        torch.set_num_threads(os.cpu_count())
    ratio = RatioProbe()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        trainer, hub_id, settings, samples, tokens, unit = BUILDERS[cli.trainer](
            cli, cli.device, torch.bfloat16, workdir, ratio
        )
        setup_seconds = time.perf_counter() - start
        parameters = list(trainer.model.parameters())
        probe = StepProbe(cli.device, samples, tokens, unit, ratio)
        trainer.add_callback(probe)
        accelerator = trainer.accelerator
        print(
            f"{cli.trainer}: {hub_id} ({cli.device}, {accelerator.distributed_type}), settings {settings}", flush=True
        )
        trainer.train()
    result = {
        "trainer": cli.trainer,
        "architecture": hub_id,
        "device": cli.device,
        "device_name": torch.cuda.get_device_name()
        if cli.device == "cuda"
        else platform.processor() or platform.machine(),
        "distributed_type": str(accelerator.distributed_type),
        "dtype": "bf16",
        "settings": settings,
        "model_parameters": sum(p.numel() for p in parameters),
        "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
        "setup_seconds": round(setup_seconds, 1),
        "steps": probe.rows,
        "non_finite": probe.non_finite,
        "torch": torch.__version__,
    }
    line = json.dumps(result)
    if cli.output_json and accelerator.is_main_process:
        with open(cli.output_json, "w") as f:
            f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
