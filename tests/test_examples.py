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
"""The Flow-RTPO example runs its red-teaming mode end to end on tiny models of every family, offline."""

import os
import subprocess
import sys


EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def test_flow_rtpo_red_teaming_example_runs_offline_on_tiny_models(tmp_path):
    command = [
        sys.executable,
        os.path.join(EXAMPLES, "flow_rtpo.py"),
        "--tiny",
        "--output_dir",
        str(tmp_path),
        "--max_steps",
        "2",
        "--num_train_prompts",
        "4",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "flow_rtpo reward" in result.stdout
    # 4 training prompts, 2 original prompts per step: one epoch is 2 steps, and each epoch saves its samples
    assert sorted(os.listdir(tmp_path / "samples" / "step-2")) == [
        "000.png",
        "001.png",
        "002.png",
        "003.png",
        "prompts.txt",
    ]
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file() and "Flow-GRPO" in (
        tmp_path / "README.md"
    ).read_text()
    assert (tmp_path / "prompt_editor.safetensors").is_file() and not (tmp_path / "tmp_trainer").exists()
