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
"""Dataset loaders, and small generated datasets for offline `--tiny` runs."""

from typing import TYPE_CHECKING

from ..import_utils import lazy_getattr


_import_structure = {
    "real_toxicity_prompts": ["load_real_toxicity_prompts"],
    "latex": ["extract_latex", "generate_latex_corpus", "latex_from_rows", "load_s1k_latex"],
    "colour_shapes": ["COLOURS", "colour_question_dataset", "ColourTokenReward", "colour_accuracy_reward"],
}

if TYPE_CHECKING:
    from .colour_shapes import COLOURS, ColourTokenReward, colour_accuracy_reward, colour_question_dataset
    from .latex import extract_latex, generate_latex_corpus, latex_from_rows, load_s1k_latex
    from .real_toxicity_prompts import load_real_toxicity_prompts
else:
    __getattr__, __all__ = lazy_getattr(__name__, _import_structure)
