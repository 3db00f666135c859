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
"""Processors of vision-language models that load without torchvision.

transformers' Qwen-VL processors hold a video processor that needs torchvision, so `AutoProcessor.from_pretrained`
fails on a machine without it even when only images are processed. [`load_vlm_processor`] then rebuilds the same
processor class from the saved tokenizer and (PIL) image processor with an empty video slot. The VLM judge, TPRL and
the image editor load their processors through it.
"""

import inspect
import json
import os

from transformers.utils import logging


logger = logging.get_logger(__name__)

# `from_pretrained` arguments that only the tokenizer understands, and those every sub-processor loader takes
_TOKENIZER_ONLY_KWARGS = ("padding_side", "truncation_side")
_LOADING_KWARGS = ("revision", "trust_remote_code", "cache_dir", "token", "local_files_only", "subfolder")
# the files the rebuild reads (a Hub id is fetched into the HF cache with these only)
_PROCESSOR_FILES = ["*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


def without_video_processor(processor_class: type) -> type:
    """`processor_class` that takes `video_processor=None`: ProcessorMixin checks every sub-processor slot (the video
    processor's class cannot be resolved without torchvision), and `save_pretrained` (TRL's `save_model`) saves every
    slot; the empty slot skips both."""

    class TorchvisionFreeProcessor(processor_class):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

        def save_pretrained(self, save_directory, **kwargs):
            attributes = type(self).get_attributes

            def present_attributes(cls):
                return [name for name in attributes() if getattr(self, name, None) is not None]

            type(self).get_attributes = classmethod(present_attributes)
            try:
                return super().save_pretrained(save_directory, **kwargs)
            finally:
                type(self).get_attributes = attributes

    TorchvisionFreeProcessor.__name__ = processor_class.__name__
    TorchvisionFreeProcessor.__qualname__ = processor_class.__qualname__
    return TorchvisionFreeProcessor


def _processor_class_name(path: str) -> str | None:
    from transformers import AutoConfig
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    for name in ("processor_config.json", "tokenizer_config.json"):
        if os.path.isfile(os.path.join(path, name)):
            with open(os.path.join(path, name), encoding="utf-8") as f:
                class_name = json.load(f).get("processor_class")
            if class_name:
                return class_name
    if os.path.isfile(os.path.join(path, "config.json")):
        return PROCESSOR_MAPPING_NAMES.get(AutoConfig.from_pretrained(path).model_type)
    return None


def load_vlm_processor(path: str | os.PathLike, **kwargs):
    """`AutoProcessor.from_pretrained(path, **kwargs)`, or, when that needs torchvision (the Qwen-VL video
    processors), the same processor class rebuilt from the saved tokenizer and (PIL) image processor with an empty
    video slot.

    Args:
        path (`str` or `os.PathLike`): A local directory or a Hub id (read from the HF cache, fetched when online).
        **kwargs: `from_pretrained` arguments, e.g. `padding_side="left"` (given to the tokenizer) or `max_pixels`
            (given to the image processor).
    """
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    path = os.fspath(path)
    try:
        return AutoProcessor.from_pretrained(path, **kwargs)
    except (ImportError, OSError, AttributeError, ValueError) as error:
        directory = path
        if not os.path.isdir(path):
            from huggingface_hub import snapshot_download

            directory = snapshot_download(path, revision=kwargs.get("revision"), allow_patterns=_PROCESSOR_FILES)
        class_name = _processor_class_name(directory)
        if class_name is None:
            raise
        import transformers

        processor_class = getattr(transformers, class_name)
        if "video_processor" not in inspect.signature(processor_class.__init__).parameters:
            raise
        logger.info(
            f"AutoProcessor failed ({type(error).__name__}); rebuilding {class_name} without a video processor."
        )
        tokenizer_kwargs = {k: v for k, v in kwargs.items() if k in _TOKENIZER_ONLY_KWARGS + _LOADING_KWARGS}
        image_kwargs = {k: v for k, v in kwargs.items() if k not in _TOKENIZER_ONLY_KWARGS}
        tokenizer = AutoTokenizer.from_pretrained(directory, **tokenizer_kwargs)
        image_processor = AutoImageProcessor.from_pretrained(directory, **image_kwargs)
        return without_video_processor(processor_class)(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=getattr(tokenizer, "chat_template", None),
        )
