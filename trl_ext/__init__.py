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
"""trl_ext: reinforcement-learning trainers and rewards for Hugging Face TRL that TRL itself does not have."""

from typing import TYPE_CHECKING

from .import_utils import lazy_getattr


__version__ = "0.1.0.dev0"

_import_structure = {
    "hub": ["ModelSources", "resolve_pretrained", "scoped_env"],
    "models.diffusion_lm": ["DiffusionGemmaAdapter", "DiffusionLMAdapter", "MaskedDiffusionLMAdapter", "SEDDAdapter"],
    "models.prompt_editor": ["PromptEditorPolicy"],
    "models.sedd": ["SEDDConfig", "SEDDModel"],
    "models.vec2text_inversion": ["Vec2TextInverter"],
    "trainers.diffusion_lm.sft_config": ["DiscreteDiffusionSFTConfig"],
    "trainers.diffusion_lm.sft_trainer": ["DiscreteDiffusionSFTTrainer"],
    "trainers.diffusion_lm.ppo_config": ["DiscreteDiffusionPPOConfig"],
    "trainers.diffusion_lm.ppo_trainer": ["DiscreteDiffusionPPOTrainer"],
    "trainers.diffusion_lm.config": ["DiffusionLMGRPOConfig"],
    "trainers.diffusion_lm.trainer": ["DiffusionLMGRPOTrainer"],
    "trainers.flow.config": ["FlowGRPOConfig"],
    "trainers.flow.trainer": ["FlowGRPOTrainer"],
    "trainers.flow.rtpo_config": ["FlowRTPOConfig"],
    "trainers.flow.rtpo_trainer": ["FlowRTPOTrainer"],
    "trainers.grpo.config": ["ExtendedGRPOConfig"],
    "trainers.grpo.trainer": ["ExtendedGRPOTrainer"],
    "trainers.tprl.config": ["TPRLGRPOConfig"],
    "trainers.tprl.trainer": ["TPRLGRPOTrainer"],
    "trainers.ppo.config": ["PPOConfig"],
    "trainers.ppo.trainer": ["PPOTrainer"],
    "pipelines.config": ["RLHFConfig"],
    "pipelines.pipeline": ["RLHFPipeline"],
}

if TYPE_CHECKING:
    from .hub import ModelSources, resolve_pretrained, scoped_env
    from .models.diffusion_lm import DiffusionGemmaAdapter, DiffusionLMAdapter, MaskedDiffusionLMAdapter, SEDDAdapter
    from .models.prompt_editor import PromptEditorPolicy
    from .models.sedd import SEDDConfig, SEDDModel
    from .models.vec2text_inversion import Vec2TextInverter
    from .pipelines.config import RLHFConfig
    from .pipelines.pipeline import RLHFPipeline
    from .trainers.diffusion_lm.config import DiffusionLMGRPOConfig
    from .trainers.diffusion_lm.ppo_config import DiscreteDiffusionPPOConfig
    from .trainers.diffusion_lm.ppo_trainer import DiscreteDiffusionPPOTrainer
    from .trainers.diffusion_lm.sft_config import DiscreteDiffusionSFTConfig
    from .trainers.diffusion_lm.sft_trainer import DiscreteDiffusionSFTTrainer
    from .trainers.diffusion_lm.trainer import DiffusionLMGRPOTrainer
    from .trainers.flow.config import FlowGRPOConfig
    from .trainers.flow.rtpo_config import FlowRTPOConfig
    from .trainers.flow.rtpo_trainer import FlowRTPOTrainer
    from .trainers.flow.trainer import FlowGRPOTrainer
    from .trainers.grpo.config import ExtendedGRPOConfig
    from .trainers.grpo.trainer import ExtendedGRPOTrainer
    from .trainers.ppo.config import PPOConfig
    from .trainers.ppo.trainer import PPOTrainer
    from .trainers.tprl.config import TPRLGRPOConfig
    from .trainers.tprl.trainer import TPRLGRPOTrainer
else:
    __getattr__, __all__ = lazy_getattr(__name__, _import_structure)
