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
"""The Flow-RTPO prompt editor's side of training: the terms of its reward and its update.

For each original prompt, k edits p'_1..k each get `num_generations` images. The reward of an edit is

    R(p') = mean over its images of the image reward − α · max(0, τ − sim(p, p'))     (semantic penalty, SBERT cosine)

its advantage is R normalised within the k edits of the same original prompt (GRPO), and the editor takes one clipped
policy-gradient step on log π(δ | e) with ratio exp(log π_θ − log π_old). The proximity radius follows the smoothed
mean within-group variance of the image rewards: σ_R² ← ρ · σ_R² + (1 − ρ) · mean_groups Var(image rewards).
"""

import torch
from accelerate import Accelerator

from ...models.prompt_editor import PromptEditorPolicy, PromptEdits
from ...rl.advantages import compute_advantages
from ...rl.losses import clipped_surrogate_loss


def semantic_penalty(editor: PromptEditorPolicy, edits: PromptEdits) -> torch.Tensor:
    """α · max(0, τ − sim(p, p')) per edit (N,); zero without a similarity function."""
    if editor.similarity is None:
        return torch.zeros(len(edits.edited))
    similarity = editor.similarity(edits.original, edits.edited).float().cpu()
    return editor.config.semantic_alpha * (editor.config.semantic_tau - similarity).clamp(min=0)


def edit_rewards(image_rewards: torch.Tensor, penalty: torch.Tensor, num_generations: int) -> torch.Tensor:
    """R(p'): the mean reward of each edit's `num_generations` consecutive images (NaN-aware) minus its penalty."""
    return torch.nanmean(image_rewards.view(-1, num_generations), dim=1) - penalty


def update_radius(editor: PromptEditorPolicy, within_group_variance: float) -> float:
    """Smooth σ_R² with the new mean within-group reward variance and return the new radius ε_t."""
    rho = editor.config.radius_smoothing
    editor.reward_variance.mul_(rho).add_((1 - rho) * within_group_variance)
    return editor.radius


def editor_step(
    prompt_editor: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    edits: PromptEdits,
    image_rewards: torch.Tensor,
    *,
    num_generations: int,
    num_edits_per_prompt: int,
    scale_rewards: str,
    epsilon: float,
    accelerator: Accelerator,
) -> dict[str, float]:
    """One clipped policy-gradient update of the prompt editor with the edits' group advantages; returns its logs.

    Args:
        prompt_editor (`torch.nn.Module`):
            The [`~trl_ext.models.prompt_editor.PromptEditorPolicy`] as `accelerator.prepare` returned it (wrapped in
            DDP on several processes: the forward goes through it so that the gradients are averaged).
        optimizer (`torch.optim.Optimizer`):
            The editor's own optimizer; it steps once per call, outside gradient accumulation.
        edits ([`~trl_ext.models.prompt_editor.PromptEdits`]):
            The edits this process sampled, one per `num_generations` consecutive images.
        image_rewards (`torch.Tensor`):
            The images' rewards (NaN: unscored), `num_generations` consecutive images per edit and
            `num_edits_per_prompt` consecutive edits per original prompt.
        num_generations, num_edits_per_prompt, scale_rewards, epsilon:
            Images per edit, edits per original prompt (the editor's advantage group), the advantages' standard
            deviation (see [`~trl_ext.rl.advantages.compute_advantages`]) and the clipping range of the editor's ratio.
        accelerator (`accelerate.Accelerator`):
            Unwraps the editor and averages the within-group reward variance over processes (one radius everywhere).
    """
    editor = accelerator.unwrap_model(prompt_editor)
    penalty = semantic_penalty(editor, edits)
    rewards = edit_rewards(image_rewards, penalty, num_generations)
    groups = torch.arange(len(rewards)) // num_edits_per_prompt
    advantages = compute_advantages(rewards, groups, scale=scale_rewards).to(edits.deltas.device)
    log_ratio = prompt_editor(edits.embeddings, edits.deltas) - edits.log_probs.detach()  # through DDP
    loss, clipped = clipped_surrogate_loss(log_ratio, advantages, epsilon)
    optimizer.zero_grad()
    loss.mean().backward()  # not accelerator.backward: no gradient-accumulation scaling for this optimizer
    optimizer.step()
    images_per_prompt = num_generations * num_edits_per_prompt
    variance = torch.nan_to_num(image_rewards.view(-1, images_per_prompt).var(dim=1)).mean()
    variance = accelerator.gather(variance.to(accelerator.device).reshape(1)).mean()  # one radius on every process
    return {
        "editor/loss": loss.mean().item(),
        "editor/ratio": log_ratio.exp().mean().item(),
        "editor/clip_ratio/region_mean": clipped.float().mean().item(),  # TRL's name, under the editor's prefix
        "editor/reward": torch.nanmean(rewards).item(),
        "editor/semantic_penalty": penalty.mean().item(),
        "editor/radius": update_radius(editor, variance.item()),
    }
