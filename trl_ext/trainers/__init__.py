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
"""Trainers: one folder per method (`grpo/`, `tprl/`, `flow/`, `sedd/`, `ppo/`) and the shared pieces of the trainers
that own their loop: `loop.RLLoopTrainer` (the loop contract), `checkpointing` (complete-or-absent checkpoints and
bit-identical resume), `hub_push` (`push_to_hub` / `hub_strategy`), `group_update.GroupPolicyTrainer` (the one clipped
group-policy update of SEDD PPO and Flow-GRPO) and `validation` (config checks)."""
