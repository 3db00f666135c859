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
"""The image-edit benchmark: a diffusion editor (Qwen-Image-Edit) judged by a VLM, with per-category reports.

`python -m trl_ext.evaluation.image_edit --config bench.yaml` (or `--tiny` for an offline run on tiny models).
"""

from typing import TYPE_CHECKING

from ...import_utils import lazy_getattr


_import_structure = {
    "compare": ["compare_reports", "write_comparison"],
    "data": [
        "CATEGORY_SLUGS",
        "EditDataError",
        "EditItem",
        "category_slug",
        "edit_records_dataset",
        "items_from_records",
        "load_edit_items",
    ],
    "editors": ["DiffusersImageEditor", "ImageEditor", "load_image_edit_pipeline"],
    "report": ["STD_DDOF", "build_report", "summarize", "write_report"],
    "runner": ["ImageEditBenchmarkConfig", "RunMismatchError", "run_benchmark", "run_metadata"],
}

if TYPE_CHECKING:
    from .compare import compare_reports, write_comparison
    from .data import (
        CATEGORY_SLUGS,
        EditDataError,
        EditItem,
        category_slug,
        edit_records_dataset,
        items_from_records,
        load_edit_items,
    )
    from .editors import DiffusersImageEditor, ImageEditor, load_image_edit_pipeline
    from .report import STD_DDOF, build_report, summarize, write_report
    from .runner import ImageEditBenchmarkConfig, RunMismatchError, run_benchmark, run_metadata
else:
    __getattr__, __all__ = lazy_getattr(__name__, _import_structure)
