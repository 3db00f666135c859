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
"""Write every tiny random model family of `trl_ext.testing` to disk, offline, and load each back.

Use it to get local stand-ins for the real checkpoints (for your own tests, or to try an example without a GPU):

```bash
python examples/tiny_models.py --output_dir tiny_models
```

`--tiny` is accepted (and ignored) so that `make demo` can run every example the same way.
"""

import os
import sys
import time
from dataclasses import dataclass, field

from example_utils import add_config_help
from trl import TrlParser

import trl_ext.testing as testing
from trl_ext import Vec2TextInverter


@dataclass
class TinyModelsArguments:
    output_dir: str = field(default="tiny_models", metadata={"help": "Directory that receives one folder per model."})
    tiny: bool = field(default=True, metadata={"help": "Accepted for `make demo`; every model here is tiny."})


def main(args: TinyModelsArguments) -> None:
    from detoxify import Detoxify
    from diffusers import DiffusionPipeline
    from sentence_transformers import SentenceTransformer
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoModelForSequenceClassification,
        CLIPModel,
    )

    from trl_ext.evaluation.image_edit import load_image_edit_pipeline
    from trl_ext.models.diffusion_lm import load_diffusion_lm, load_masked_diffusion_lm
    from trl_ext.models.sedd import SEDDModel

    families = {
        "qwen2": (testing.save_tiny_qwen2, AutoModelForCausalLM.from_pretrained),
        "qwen2_reward_model": (
            testing.save_tiny_qwen2_reward_model,
            AutoModelForSequenceClassification.from_pretrained,
        ),
        "qwen_vl": (testing.save_tiny_qwen_vl, AutoModelForImageTextToText.from_pretrained),
        "qwen3_vl": (testing.save_tiny_qwen3_vl, AutoModelForImageTextToText.from_pretrained),
        "llava_next": (testing.save_tiny_llava_next, AutoModelForImageTextToText.from_pretrained),
        "clip": (testing.save_tiny_clip, CLIPModel.from_pretrained),
        "gtr_t5": (testing.save_tiny_gtr_t5, SentenceTransformer),
        "sd3": (testing.save_tiny_sd3, DiffusionPipeline.from_pretrained),
        "flux": (testing.save_tiny_flux, DiffusionPipeline.from_pretrained),
        "qwen_image": (testing.save_tiny_qwen_image, DiffusionPipeline.from_pretrained),
        "qwen_image_edit": (testing.save_tiny_qwen_image_edit, load_image_edit_pipeline),  # torchvision-free processor
        "sedd": (testing.save_tiny_sedd, SEDDModel.from_pretrained),
        "masked_diffusion_lm": (testing.save_tiny_masked_diffusion_lm, load_masked_diffusion_lm),
        "diffusion_gemma": (testing.save_tiny_diffusion_gemma, load_diffusion_lm),  # DiffusionGemmaForBlockDiffusion
    }
    for name, (save, load) in families.items():
        start = time.perf_counter()
        path = save(os.path.join(args.output_dir, name))
        load(path)
        print(f"{name:<20} saved and reloaded from {path} in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    tiny = testing.save_tiny_detoxify(os.path.join(args.output_dir, "detoxify"))
    Detoxify("original", checkpoint=tiny.checkpoint, huggingface_config_path=tiny.huggingface_config_path)
    print(f"{'detoxify':<20} saved and reloaded from {tiny.checkpoint} in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    parts = testing.save_tiny_vec2text(os.path.join(args.output_dir, "vec2text"))
    Vec2TextInverter.from_pretrained(**parts.as_kwargs(), device="cpu")
    print(
        f"{'vec2text':<20} saved and reloaded from {os.path.dirname(parts.inversion)} in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    parser = TrlParser(TinyModelsArguments)
    add_config_help(parser)
    if any(arg.split("=")[0] == "--max_steps" for arg in sys.argv[1:]):
        parser.error(
            "--max_steps does not apply: this script trains nothing, it writes and reloads each tiny model once."
        )
    (script_args,) = parser.parse_args_and_config()
    main(script_args)
