"""Tiny randomly initialised models of real architectures (BLIP captioner, Stable Diffusion pipeline),
saved with save_pretrained so that the code under test loads them by path exactly as it loads real ones."""

import json
import pathlib

import torch


def tiny_blip(folder: pathlib.Path) -> pathlib.Path:
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
        "a the bird red blue green small large circle square on with and of is".split()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=BertTokenizer(str(folder / "vocab.txt")))
    torch.manual_seed(0)
    config = BlipConfig(
        text_config=dict(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64, bos_token_id=2, sep_token_id=3,
                         pad_token_id=0),
        vision_config=dict(hidden_size=32, image_size=32, patch_size=8, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=37),
        projection_dim=32)
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _tiny_clip_tokenizer(folder: pathlib.Path):
    """A CLIP tokenizer over single letters (and its vocabulary), built from files beside `folder`."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz"):
        vocab[ch], vocab[ch + "</w>"] = 3 + i, 29 + i
    tok_dir = folder.parent / (folder.name + "-tokenizer-src")
    tok_dir.mkdir(exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77), vocab


def tiny_stable_diffusion(folder: pathlib.Path) -> pathlib.Path:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        latent_channels=4, norm_num_groups=4, sample_size=32)
    tokenizer, vocab = _tiny_clip_tokenizer(folder)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=37,
                                                num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                                                bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=16))
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                            scheduler=DDIMScheduler(clip_sample=False), safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    return folder


def tiny_clip(folder: pathlib.Path, width: int = 16, projection: int = 16) -> pathlib.Path:
    """A random-init CLIP of the real architecture (small: `width` wide, `projection` dimensional embeddings), with
    its processor, saved as a checkpoint folder: the same from_pretrained path a Hub id takes."""
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextConfig,
                              CLIPVisionConfig)

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tokenizer, vocab = _tiny_clip_tokenizer(folder)
    config = CLIPConfig(
        text_config=CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=37, num_hidden_layers=1,
                                   num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                   pad_token_id=1).to_dict(),
        vision_config=CLIPVisionConfig(hidden_size=width, intermediate_size=37, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=32, patch_size=8).to_dict(),
        projection_dim=projection)
    CLIPModel(config).eval().save_pretrained(folder)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder


def tiny_dinov2(folder: pathlib.Path) -> pathlib.Path:
    """A random-init DINOv2 (transformers' Dinov2Model, the real architecture, small) saved as a checkpoint
    folder, the path a Hub id's snapshot takes; 224-px inputs give 16 x 16 patches of 14 px."""
    from transformers import Dinov2Config, Dinov2Model

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    # 8-d embeddings: the 16 sample images are more than the feature size, so FD's covariances are full rank;
    # a wide initialisation spreads the random network's embeddings like a trained one's
    Dinov2Model(Dinov2Config(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
                             patch_size=14, image_size=224, initializer_range=0.5)).eval().save_pretrained(folder)
    return folder
