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
"""The published architectures users train, with random weights: the configs of `louaaron/sedd-small` / `-medium`,
`stabilityai/stable-diffusion-3.5-medium`, `Qwen/Qwen2.5-VL-3B-Instruct` and `Qwen/Qwen2.5-1.5B-Instruct`, copied from
their `config.json` files; `build_tiny_tokenizer(vocab_size)` gives the offline tokenizer of a published vocabulary
size. For real-size runs (`benchmarks/real_size.py`): shapes, precisions and memory as users meet them, without a
download."""

from contextlib import contextmanager

import torch


SEDD_CONFIGS = {
    # louaaron/sedd-small / sedd-medium config.json ("model" section): GPT-2 vocabulary, 1024-token blocks
    "louaaron/sedd-small": dict(hidden_size=768, cond_dim=128, n_blocks=12, n_heads=12),
    "louaaron/sedd-medium": dict(hidden_size=1024, cond_dim=128, n_blocks=24, n_heads=16),
}

QWEN2_5_1_5B = "Qwen/Qwen2.5-1.5B-Instruct"
QWEN2_5_1_5B_CONFIG = dict(
    vocab_size=151936,
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)

QWEN2_5_VL_3B = "Qwen/Qwen2.5-VL-3B-Instruct"
QWEN2_5_VL_3B_TEXT_CONFIG = dict(
    vocab_size=151936,
    hidden_size=2048,
    intermediate_size=11008,
    num_hidden_layers=36,
    num_attention_heads=16,
    num_key_value_heads=2,
    max_position_embeddings=128000,
    rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0},
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    layer_types=None,
)
QWEN2_5_VL_3B_VISION_CONFIG = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    out_hidden_size=2048,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[7, 15, 23, 31],
    hidden_act="silu",
)

SD3_5_MEDIUM = "stabilityai/stable-diffusion-3.5-medium"
SD3_5_MEDIUM_TRANSFORMER_CONFIG = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    out_channels=16,
    pos_embed_max_size=384,
    dual_attention_layers=tuple(range(13)),
    qk_norm="rms_norm",
)
# text_encoder (CLIP ViT-L/14 text tower), text_encoder_2 (OpenCLIP bigG/14 text tower), text_encoder_3 (T5-v1.1-XXL)
SD3_5_MEDIUM_CLIP_L_CONFIG = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768
)
SD3_5_MEDIUM_CLIP_G_CONFIG = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, projection_dim=1280
)
SD3_5_MEDIUM_T5_CONFIG = dict(
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    feed_forward_proj="gated-gelu",
    relative_attention_num_buckets=32,
)
SD3_5_MEDIUM_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=16,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=1.5305,
    shift_factor=0.0609,
    use_quant_conv=False,
    use_post_quant_conv=False,
)


@contextmanager
def default_dtype_and_device(dtype: torch.dtype, device: torch.device | str):
    """Build modules directly in `dtype` on `device`: a 4.7B-parameter T5 built in fp32 first would need 19 GB."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def sedd_model(hub_id: str, length: int = 1024, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """A random `SEDDModel` with the architecture of `hub_id` (`louaaron/sedd-small` or `-medium`)."""
    from ..models.sedd import SEDDConfig, SEDDModel
    from .sedd import perturb_zero_initialised_layers

    if hub_id not in SEDD_CONFIGS:
        raise ValueError(f"Unknown SEDD checkpoint {hub_id!r}; choose one of {sorted(SEDD_CONFIGS)}.")
    with default_dtype_and_device(dtype, device):
        model = SEDDModel(SEDDConfig(tokens=50257, length=length, dropout=0.0, **SEDD_CONFIGS[hub_id]))
        perturb_zero_initialised_layers(model)
    return model


def qwen2_5_causal_lm(tokenizer, dtype: torch.dtype, device: str, num_labels: int | None = None):
    """`Qwen/Qwen2.5-1.5B-Instruct`'s architecture with random weights: the causal LM, or with `num_labels` the
    sequence classifier that TRL's reward and value models are."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    config = Qwen2Config(
        **QWEN2_5_1_5B_CONFIG,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        **({"num_labels": num_labels} if num_labels else {}),
    )
    with default_dtype_and_device(dtype, device):
        model = (Qwen2ForSequenceClassification if num_labels else Qwen2ForCausalLM)(config)
    if not num_labels:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def qwen2_5_vl_3b(tokenizer, dtype: torch.dtype, device: str):
    """`Qwen/Qwen2.5-VL-3B-Instruct`'s architecture with random weights, its vision special ids from `tokenizer` and
    those ids suppressed in generation (a random model samples them; see `trl_ext.testing.vision_language`)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from .vision_language import vision_special_token_ids

    start, end, image, video = vision_special_token_ids(tokenizer)
    config = Qwen2_5_VLConfig(
        text_config={
            **QWEN2_5_VL_3B_TEXT_CONFIG,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": None,
        },
        vision_config=QWEN2_5_VL_3B_VISION_CONFIG,
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
    )
    with default_dtype_and_device(dtype, device):
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    model.generation_config.suppress_tokens = [start, end, image, video]
    return model


def sd3_5_medium_pipeline(dtype: torch.dtype, device: str):
    """`stabilityai/stable-diffusion-3.5-medium` with random weights: its MMDiT, VAE and all three text encoders
    (CLIP-L, OpenCLIP bigG, T5-XXL: 4.7B of the pipeline's 7.2B parameters), the offline tiny tokenizers, the VAE in
    fp32 (as Flow-GRPO decodes) and the rest in `dtype`."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from .encoders import build_tiny_clip_tokenizer, build_tiny_t5_tokenizer

    clip_tokenizer = build_tiny_clip_tokenizer(model_max_length=77)
    t5_tokenizer = build_tiny_t5_tokenizer(model_max_length=256)
    clip_ids = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    with default_dtype_and_device(dtype, device):
        text_encoder = CLIPTextModelWithProjection(
            CLIPTextConfig(**SD3_5_MEDIUM_CLIP_L_CONFIG, hidden_act="quick_gelu", **clip_ids)
        )
        text_encoder_2 = CLIPTextModelWithProjection(
            CLIPTextConfig(**SD3_5_MEDIUM_CLIP_G_CONFIG, hidden_act="gelu", **clip_ids)
        )
        text_encoder_3 = T5EncoderModel(
            T5Config(**SD3_5_MEDIUM_T5_CONFIG, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
        )
        transformer = SD3Transformer2DModel(**SD3_5_MEDIUM_TRANSFORMER_CONFIG)
    with default_dtype_and_device(torch.float32, device):
        vae = AutoencoderKL(**SD3_5_MEDIUM_VAE_CONFIG)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=clip_tokenizer,
        text_encoder_3=text_encoder_3,
        tokenizer_3=t5_tokenizer,
    )
