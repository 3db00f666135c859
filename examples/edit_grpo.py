# Copyright 2026 The trl_ext Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""RL for the image editor judged by a VLM: Flow-GRPO (`FlowGRPOTrainer`, LoRA) on Qwen-Image-Edit
(`QwenImageEditPipeline`) with the VLM judge's expected score as the reward, then the image-edit benchmark on held-out
records with the trained LoRA and with the base editor, reported side by side.

The records are the image-edit benchmark's (its JSON / JSONL / `datasets` formats, or `tiny`, the bundled set); every
`--held_out_every`-th record is held out of training and benchmarked. Groups are `num_generations` edits of one record.
An edit the judge does not score (no number in its answer, or too little probability on the digits) is masked and
counted, never scored zero.

```bash
accelerate launch --config_file accelerate_configs/single_gpu.yaml examples/edit_grpo.py \\
    --model Qwen/Qwen-Image-Edit --judge Qwen/Qwen3-VL-8B-Instruct --data bench.json \\
    --output_dir edit-grpo-qwen-image-edit --bf16 True --max_steps 300
```

Outputs: the LoRA and its card in `output_dir`, the two benchmark runs (replacing a previous run's) in
`output_dir/benchmark/{base,trained}` (`report.md`, `report.json`, a chart each) and the side-by-side comparison in
`output_dir/benchmark/comparison.md` (`comparison.json`, `comparison.png`: mean per category of each and their
difference).

Offline on CPU with a tiny random editor and judge (the tiny judge puts little probability on digits, so `--tiny` sets
`--min_digit_mass 0`):

```bash
python examples/edit_grpo.py --tiny --output_dir outputs/edit_grpo
```
"""

import gc
import os
import shutil
from dataclasses import dataclass, field

from example_utils import on_main_process, parse_args, print_on_main_process

from trl_ext import FlowGRPOConfig, FlowGRPOTrainer


@dataclass
class EditScriptArguments:
    model: str = field(
        default="Qwen/Qwen-Image-Edit", metadata={"help": "QwenImageEditPipeline: trl_ext.hub key, Hub id or path."}
    )
    judge: str = field(
        default="Qwen/Qwen3-VL-8B-Instruct", metadata={"help": "VLM judge: trl_ext.hub key, Hub id or path."}
    )
    judge_url: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible judge endpoint; `judge` is then the served model's name."}
    )
    data: str = field(
        default="tiny", metadata={"help": "Edit records: JSON / JSONL / datasets dir or Hub id, 'tiny'."}
    )
    held_out_every: int = field(
        default=2, metadata={"help": "Every N-th record (N-1, 2N-1, ...) is held out of training and benchmarked."}
    )
    max_records: int | None = field(default=None, metadata={"help": "Use only the first records."})
    compare_with_original: bool = field(
        default=True, metadata={"help": "The judge sees the source image before the edit."}
    )
    min_digit_mass: float = field(
        default=0.5, metadata={"help": "Judge: a sample with less probability on the valid digits is unscored."}
    )
    eval_num_inference_steps: int = field(default=50, metadata={"help": "Benchmark: denoising steps per edit."})
    eval_true_cfg_scale: float = field(default=4.0, metadata={"help": "Benchmark: true CFG scale."})
    local_base_path: str | None = field(default=None, metadata={"help": "Directory of local model copies."})
    tiny: bool = field(default=False, metadata={"help": "Run offline on a tiny random editor and judge (CPU)."})


def split_records(items: list, every: int) -> tuple[list, list]:
    """(training, held-out) items: every `every`-th item is held out."""
    if every < 2:
        raise ValueError(f"held_out_every must be >= 2 (some records must train), got {every}.")
    held_out = [item for i, item in enumerate(items) if i % every == every - 1]
    return [item for i, item in enumerate(items) if i % every != every - 1], held_out


def save_tiny_models(directory: str) -> tuple[str, str]:
    """A tiny random editor and judge; returns their directories."""
    from trl_ext.testing import save_tiny_qwen3_vl, save_tiny_qwen_image_edit

    return (
        save_tiny_qwen_image_edit(os.path.join(directory, "qwen_image_edit")),
        save_tiny_qwen3_vl(os.path.join(directory, "judge")),
    )


def benchmark(script_args, training_args, model: str, lora: str | None, items, judge, directory: str) -> dict:
    """The benchmark on `items` with the editor `model` (plus the LoRA in `lora`), judged by `judge`."""
    from trl_ext.evaluation.image_edit import (
        DiffusersImageEditor,
        ImageEditBenchmarkConfig,
        load_image_edit_pipeline,
        run_benchmark,
    )

    device = str(training_args.device)
    pipeline = load_image_edit_pipeline(model, device=device, dtype="bfloat16" if training_args.bf16 else "float32")
    name = os.path.basename(os.path.normpath(model))
    if lora is not None:
        pipeline.load_lora_weights(lora)
        name = f"{name} + {os.path.basename(os.path.normpath(lora))}"
    config = ImageEditBenchmarkConfig(
        output_dir=directory,
        num_inference_steps=script_args.eval_num_inference_steps,
        true_cfg_scale=script_args.eval_true_cfg_scale,
        seed=training_args.seed,
        condition_area=training_args.condition_area,
        compare_with_original=script_args.compare_with_original,
        min_digit_mass=script_args.min_digit_mass,
    )
    editor = DiffusersImageEditor(
        pipeline,
        name,
        num_inference_steps=config.num_inference_steps,
        true_cfg_scale=config.true_cfg_scale,
        condition_area=config.condition_area,
    )
    report = run_benchmark(config, editor=editor, judge=judge, items=items)
    del editor, pipeline
    gc.collect()
    return report


def main(script_args: EditScriptArguments, training_args: FlowGRPOConfig) -> None:
    from accelerate import PartialState

    from trl_ext.evaluation.image_edit import edit_records_dataset, load_edit_items, write_comparison
    from trl_ext.hub import ModelSources, resolve_pretrained
    from trl_ext.rewards import OpenAICompatibleJudge, VLMJudgeReward

    sources = None
    if script_args.tiny:
        directory = os.path.join(training_args.output_dir, "tiny-models")
        model, judge_model = on_main_process(save_tiny_models, directory)
    else:
        if script_args.local_base_path:
            sources = ModelSources(use_local=True, local_base_path=script_args.local_base_path)
        model, judge_model = resolve_pretrained(script_args.model, sources).path, script_args.judge
    items = load_edit_items(script_args.data, max_items=script_args.max_records)
    train_items, held_out = split_records(items, script_args.held_out_every)
    judge_backend = OpenAICompatibleJudge(script_args.judge_url, judge_model) if script_args.judge_url else judge_model
    judge = VLMJudgeReward(
        judge_backend,
        compare_with_original=script_args.compare_with_original,
        min_digit_mass=script_args.min_digit_mass,
        sources=sources,
        device=str(training_args.device),
    )

    trainer = FlowGRPOTrainer(model, judge, training_args, edit_records_dataset(train_items))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    scored = [r for r in rewards if r == r]  # NaN: a step without any scored edit
    print_on_main_process(
        f"Judge reward over {len(rewards)} logged steps ({len(rewards) - len(scored)} without a scored edit): "
        + (f"first {scored[0]:.3f}, last {scored[-1]:.3f}" if scored else "no scored edit")
    )
    trainer.save_model()
    del trainer
    gc.collect()

    if PartialState().is_main_process:  # the benchmark runs once, on the held-out records
        root = os.path.join(training_args.output_dir, "benchmark")
        shutil.rmtree(root, ignore_errors=True)  # a previous run's edits belong to a previous LoRA
        reports = {
            "base": benchmark(script_args, training_args, model, None, held_out, judge, os.path.join(root, "base")),
            "trained": benchmark(
                script_args,
                training_args,
                model,
                training_args.output_dir,
                held_out,
                judge,
                os.path.join(root, "trained"),
            ),
        }
        comparison = write_comparison(root, reports)
        micro = comparison["overall"]["micro"]
        base, trained, difference = (
            "n/a (nothing scored)" if value is None else f"{value:.3f}"
            for value in (micro["base"]["mean"], micro["trained"]["mean"], micro["difference"])
        )
        print(
            f"Held-out benchmark ({len(held_out)} records): base {base}, trained {trained}, difference {difference}; "
            f"see {root}/comparison.md"
        )
    PartialState().wait_for_everyone()


def tiny_defaults() -> dict:
    """Defaults of a few-step CPU run on tiny models; a --config file and the command line override them."""
    return {
        "use_cpu": True,
        "resolution": 32,
        "condition_area": 64 * 64,
        "num_inference_steps": 4,
        "max_sequence_length": 32,
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "lora_r": 4,
        "lora_alpha": 8,
        "learning_rate": 0.1,
        "lr_scheduler_type": "constant",
        "beta": 0.0,
        "max_steps": 4,
        "report_to": ["none"],
        "save_strategy": "no",
        "disable_tqdm": True,
        "logging_steps": 1,
        "min_digit_mass": 0.0,
        "eval_num_inference_steps": 4,
    }


if __name__ == "__main__":
    main(*parse_args((EditScriptArguments, FlowGRPOConfig), tiny_defaults()))
