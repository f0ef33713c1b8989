"""Models: single files and diffusers folders loaded offline, discovery, the spec grammar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from differential_inpaint.backend.engine import Engine, UnknownModel
from differential_inpaint.backend.engine.checkpoints import (
    UnsupportedCheckpoint,
    detect_family,
    load_folder,
    load_single_file,
    pipeline_from_state_dict,
    read_shapes,
)
from differential_inpaint.backend.engine.flow_checkpoints import _t5_tokenizer
from differential_inpaint.backend.engine.parts import NO_PARTS
from differential_inpaint.backend.engine.pipeline import DifferentialDiffusionPipeline
from differential_inpaint.backend.engine.registry import ModelRegistry
from differential_inpaint.backend.engine.schedulers import make_scheduler
from differential_inpaint.backend.engine.tiny import build_tiny_pipeline
from differential_inpaint.backend.engine.tokenizers import build_t5_tokenizer, build_tokenizer
from differential_inpaint.protocol import JobParams

from .conftest import random_region
from .ldm_export import pipeline_to_ldm, save_single_file

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def _assert_same_weights(a: Any, b: Any) -> None:
    for name in COMPONENTS:
        left, right = getattr(a, name, None), getattr(b, name, None)
        assert (left is None) == (right is None), name
        if left is None:
            continue
        left_state, right_state = left.state_dict(), right.state_dict()
        assert set(left_state) == set(right_state), name
        for key, value in left_state.items():
            assert torch.equal(value, right_state[key]), f"{name}.{key}"


def _latents(pipe: Any) -> torch.Tensor:
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    strength = torch.linspace(0, 1, 64, dtype=torch.float64).expand(1, 1, 64, 64)
    return DifferentialDiffusionPipeline(pipe)(
        image,
        strength,
        prompt="a red door",
        num_inference_steps=4,
        scheduler=make_scheduler("euler", pipe.scheduler.config),
        generator=torch.Generator().manual_seed(1),
        output_type="latent",
    )


@pytest.mark.parametrize(
    ("builtin", "suffix"),
    [("tiny-sd15", ".safetensors"), ("tiny-sdxl", ".safetensors"), ("tiny-sd15-inpaint", ".ckpt")],
)
def test_single_file_checkpoints_load_offline_as_the_same_model(
    tmp_path: Path, builtin: str, suffix: str
) -> None:
    original = build_tiny_pipeline(builtin)
    path = save_single_file(original, tmp_path / f"model{suffix}")
    assert detect_family(read_shapes(path)) == {"tiny-sd15": "sd15", "tiny-sdxl": "sdxl"}.get(
        builtin, "sd15-inpaint"
    )
    loaded, family = load_single_file(path)  # HF_HUB_OFFLINE=1: nothing may be fetched
    assert family == detect_family(read_shapes(path))
    _assert_same_weights(original, loaded)
    assert loaded.tokenizer("a red door").input_ids == original.tokenizer("a red door").input_ids
    torch.testing.assert_close(_latents(loaded), _latents(original), rtol=0, atol=0)


def test_a_diffusers_folder_loads_offline(tmp_path: Path) -> None:
    original = build_tiny_pipeline("tiny-sdxl")
    original.save_pretrained(tmp_path / "tiny-sdxl")
    loaded, family = load_folder(tmp_path / "tiny-sdxl")
    assert family == "sdxl"
    _assert_same_weights(original, loaded)


def test_files_that_are_not_checkpoints_are_recognised(tmp_path: Path) -> None:
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0.alpha": torch.ones(1)}, str(lora))
    with pytest.raises(UnsupportedCheckpoint, match="LoRA"):
        detect_family(read_shapes(lora))
    state = pipeline_to_ldm(build_tiny_pipeline("tiny-sd15"))
    sd2 = {
        k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.model."): v
        for k, v in state.items()
    }
    with pytest.raises(UnsupportedCheckpoint, match="2.x"):
        detect_family({k: tuple(v.shape) for k, v in sd2.items()})


def test_the_clip_tokenizer_is_built_offline_from_the_shipped_merges() -> None:
    tokenizer = build_tokenizer("clip")
    assert len(tokenizer) == 49408
    ids = tokenizer("a photograph of an astronaut riding a horse").input_ids
    assert ids == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert build_tokenizer("clip", pad_token="!").pad_token_id == 0  # SDXL's second tokenizer


def test_the_t5_tokenizer_ships_with_the_engine() -> None:
    """FLUX.1 and SD3 single files carry T5-XXL's weights, not its tokenizer: the shipped one
    gives T5's own ids (transformers' T5 documentation example), pads with 0 and ends with 1."""
    tokenizer = build_t5_tokenizer("t5xxl")
    assert len(tokenizer) == 32100 and (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)
    ids = tokenizer("Studies have been shown that owning a dog is good for you").input_ids
    assert ids == [6536, 43, 118, 2008, 24, 293, 53, 3, 9, 1782, 19, 207, 21, 25, 1]
    assert tokenizer.convert_ids_to_tokens([32000, 32099]) == ["<extra_id_99>", "<extra_id_0>"]
    assert _t5_tokenizer(32128) is tokenizer  # T5-XXL's embedding table is padded to 32128 rows
    with pytest.raises(UnsupportedCheckpoint, match="vocabulary of 1000 tokens"):
        _t5_tokenizer(1000)


def _write_hf_cache_model(hf_home: Path, repo_id: str, builtin: str) -> Path:
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abcd"
    build_tiny_pipeline(builtin).save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    return snapshot


def test_discovery_finds_models_where_painters_keep_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path
) -> None:
    home = tmp_path / "home"
    comfy = home / "ComfyUI" / "models" / "checkpoints"
    a1111 = home / "stable-diffusion-webui" / "models" / "Stable-diffusion"
    extra, env_dir = tmp_path / "extra", tmp_path / "env"
    for folder, name in [
        (comfy / "sd15", "comfy_model"),
        (a1111, "a1111_model"),
        (extra, "extra_model"),
        (env_dir, "env_model"),
    ]:
        folder.mkdir(parents=True)
        (folder / f"{name}.safetensors").symlink_to(tiny_checkpoint)
    save_file({"lora.alpha": torch.ones(1)}, str(comfy / "not_a_model.safetensors"))
    (comfy / "notes.txt").write_text("ignored")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / ".cache" / "huggingface"))
    monkeypatch.setenv("DIFFERENTIAL_INPAINT_MODEL_DIRS", str(env_dir))
    _write_hf_cache_model(home / ".cache" / "huggingface", "someone/tiny-xl", "tiny-sdxl")

    engine = Engine(device="cpu", model_dirs=[extra])
    models = {m.name: (m.family, m.source) for m in engine.list_models()}
    assert models["sd15/comfy_model.safetensors"] == ("sd15", "comfyui")
    assert models["a1111_model.safetensors"] == ("sd15", "automatic1111")
    assert models["extra_model.safetensors"] == ("sd15", "folder")
    assert models["env_model.safetensors"] == ("sd15", "folder")
    assert models["hf:someone/tiny-xl"] == ("sdxl", "huggingface-cache")
    assert models["builtin:tiny-sdxl-inpaint"] == ("sdxl-inpaint", "builtin")
    assert "not_a_model.safetensors" not in models
    assert not any(str(tmp_path) in name for name in models)  # names never expose paths
    searched = [f.path for f in engine.search_folders()]
    assert searched.index(extra) < searched.index(env_dir) < searched.index(comfy)

    assert engine.resolve_model("comfy_model") == "sd15/comfy_model.safetensors"  # by stem
    assert engine.resolve_model(None) == "a1111_model.safetensors"  # the first found
    assert (
        Engine(device="cpu", default_model="hf:someone/tiny-xl").resolve_model(None) == "hf:someone/tiny-xl"
    )
    with pytest.raises(UnknownModel, match="Hugging Face cache"):
        engine.resolve_model("hf:someone/never-downloaded")
    with pytest.raises(UnknownModel, match=str(extra)):  # says where it looked
        engine.resolve_model("missing_model")


def test_a_path_spec_is_listed_under_its_file_name(tmp_path: Path, tiny_checkpoint: Path) -> None:
    engine = Engine(device="cpu", scan_default_locations=False)
    assert engine.resolve_model(str(tiny_checkpoint)) == tiny_checkpoint.name
    assert tiny_checkpoint.name in {m.name for m in engine.list_models()}
    assert engine.resolve_model(tiny_checkpoint.name) == tiny_checkpoint.name
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UnknownModel, match="junk.ckpt"):
        engine.resolve_model(str(junk))
    with pytest.raises(UnknownModel):
        Engine(device="cpu", scan_default_locations=False, allow_paths=False).resolve_model(
            str(tiny_checkpoint)
        )


def test_an_inpainting_single_file_runs_through_the_engine_and_keeps_mask_zero(tmp_path: Path) -> None:
    path = save_single_file(build_tiny_pipeline("tiny-sd15-inpaint"), tmp_path / "inpaint.safetensors")
    engine = Engine(device="cpu", model_dirs=[tmp_path], scan_default_locations=False)
    assert {m.name: m.family for m in engine.list_models()}["inpaint.safetensors"] == "sd15-inpaint"
    image = random_region(40, 40)
    mask = np.zeros((40, 40), np.uint8)
    mask[8:32, 8:32] = 255
    result = engine.inpaint(image, mask, JobParams(prompt="a window", steps=2, seed=1), model=path.name)
    assert result.image[mask == 0, :3].tobytes() == image[mask == 0, :3].tobytes()
    assert (result.image[mask == 255, 3] == 1).all()


def test_loaded_models_are_cached_least_recently_used(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(device="cpu", scan_default_locations=False, max_loaded=1)
    loads: list[str] = []
    original = ModelRegistry._load_uncached

    def counting(self: ModelRegistry, entry: Any, parts: Any = NO_PARTS) -> Any:
        loads.append(entry.name)
        return original(self, entry, parts)

    monkeypatch.setattr(ModelRegistry, "_load_uncached", counting)
    image, mask = random_region(16, 16), np.full((16, 16), 255, np.uint8)
    for model in ["builtin:tiny-sd15", "builtin:tiny-sd15", "builtin:tiny-sdxl", "builtin:tiny-sd15"]:
        engine.inpaint(image, mask, JobParams(steps=1, seed=1), model=model)
    assert loads == ["builtin:tiny-sd15", "builtin:tiny-sdxl", "builtin:tiny-sd15"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoint")
    return save_single_file(build_tiny_pipeline("tiny-sd15"), folder / "tiny_sd15.safetensors")


def test_model_index_of_a_refiner_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "refiner"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionXLImg2ImgPipeline", "text_encoder": [None, None]})
    )
    (folder / "unet" / "config.json").write_text(
        json.dumps({"in_channels": 4, "addition_embed_type": "text_time"})
    )
    with pytest.raises(UnsupportedCheckpoint, match="refiner"):
        load_folder(folder)


# The configs of the reference diffusers repositories (architecture fields only).
SD15_UNET = {
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "use_linear_projection": False,
}
SDXL_UNET = {
    "block_out_channels": [320, 640, 1280],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 2,
    "cross_attention_dim": 2048,
    "attention_head_dim": [5, 10, 20],
    "transformer_layers_per_block": [1, 2, 10],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
CLIP_BIG_G = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
}


def _reference_pipeline(family: str) -> Any:
    """The real SD1.5 / SDXL architecture with no weights (meta tensors): shapes only."""
    from diffusers import (
        AutoencoderKL,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    xl = family.startswith("sdxl")
    unet_config = dict(SDXL_UNET if xl else SD15_UNET, in_channels=9 if family.endswith("inpaint") else 4)
    vae_config = dict(
        VAE, down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4
    )
    clip = {"vocab_size": 49408, "max_position_embeddings": 77, "eos_token_id": 49407}
    with torch.device("meta"):
        parts: dict[str, Any] = {
            "unet": UNet2DConditionModel.from_config(unet_config),
            "vae": AutoencoderKL.from_config(vae_config),
            "text_encoder": CLIPTextModel(CLIPTextConfig(hidden_act="quick_gelu", **clip, **CLIP_L)),
        }
        if xl:
            parts["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig(hidden_act="gelu", projection_dim=1280, **clip, **CLIP_BIG_G)
            )
    if xl:
        return StableDiffusionXLPipeline(tokenizer=None, tokenizer_2=None, scheduler=None, **parts)
    return StableDiffusionPipeline(
        tokenizer=None, scheduler=None, safety_checker=None, feature_extractor=None, **parts
    )


@pytest.mark.parametrize("family", ["sd15", "sd15-inpaint", "sdxl"])
def test_real_checkpoint_layouts_derive_the_reference_architectures(family: str) -> None:
    """Real checkpoints cannot be downloaded here; their key layout and shapes can be made."""
    reference = _reference_pipeline(family)
    state = pipeline_to_ldm(reference)  # meta tensors: names and shapes of a real single file
    loaded, detected = pipeline_from_state_dict(state)  # strict: every weight finds its place
    assert detected == family
    expected = SDXL_UNET if family.startswith("sdxl") else SD15_UNET
    for key, value in expected.items():
        derived = loaded.unet.config[key]
        assert (list(derived) if isinstance(derived, (list, tuple)) else derived) == value, key
    for key, value in VAE.items():
        derived = loaded.vae.config[key]
        assert (list(derived) if isinstance(derived, (list, tuple)) else derived) == value, key
    assert loaded.vae.config.scaling_factor == (0.13025 if family.startswith("sdxl") else 0.18215)
    assert {k: getattr(loaded.text_encoder.config, k) for k in CLIP_L} == CLIP_L
    assert loaded.text_encoder.config.hidden_act == "quick_gelu"
    assert len(loaded.tokenizer) == 49408
    if family.startswith("sdxl"):
        assert {k: getattr(loaded.text_encoder_2.config, k) for k in CLIP_BIG_G} == CLIP_BIG_G
        assert loaded.text_encoder_2.config.hidden_act == "gelu" and loaded.tokenizer_2.pad_token == "!"


def test_old_clip_layouts_without_text_model_load_too() -> None:
    original = build_tiny_pipeline("tiny-sd15")
    state = {
        k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
        for k, v in pipeline_to_ldm(original).items()
    }
    state["cond_stage_model.transformer.embeddings.position_ids"] = torch.arange(77)[None]
    loaded, family = pipeline_from_state_dict(state)
    assert family == "sd15"
    _assert_same_weights(original, loaded)


def test_damaged_files_are_left_out_of_listings_and_refused_clearly(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "good.safetensors").symlink_to(tiny_checkpoint)
    data = tiny_checkpoint.read_bytes()
    (folder / "partial.safetensors").write_bytes(data[: len(data) // 2])  # an interrupted download
    (folder / "empty.safetensors").write_bytes(b"")
    (folder / "garbage.ckpt").write_bytes(b"not a pickle")
    engine = Engine(device="cpu", model_dirs=[folder], scan_default_locations=False)
    names = {m.name for m in engine.list_models()}
    assert "good.safetensors" in names
    assert not names & {"partial.safetensors", "empty.safetensors", "garbage.ckpt"}
    for name in ["partial.safetensors", "empty.safetensors", "garbage.ckpt"]:
        with pytest.raises(UnknownModel, match=f"{name}.*damaged or incomplete"):
            engine.resolve_model(str(folder / name))


def test_a_diffusers_folder_with_damaged_weights_is_a_clear_error(tmp_path: Path) -> None:
    build_tiny_pipeline("tiny-sd15").save_pretrained(tmp_path / "broken")
    for weights in (tmp_path / "broken" / "unet").glob("*.safetensors"):
        weights.write_bytes(b"truncated")
    engine = Engine(device="cpu", model_dirs=[tmp_path], scan_default_locations=False)
    assert "broken" in {m.name for m in engine.list_models()}  # only its JSON is read to list it
    with pytest.raises(UnknownModel, match="Cannot use 'broken' as a model: its weights could not be loaded"):
        engine.inpaint(
            random_region(8, 8), np.full((8, 8), 255, np.uint8), JobParams(steps=1), model="broken"
        )


def test_checkpoints_mixing_precisions_load_in_one() -> None:
    state = pipeline_to_ldm(build_tiny_pipeline("tiny-sd15"))
    # fp16 weights except the first UNet parameter (conv_in), as some merge tools leave them.
    state = {k: v if "input_blocks.0.0." in k else v.half() for k, v in state.items()}
    loaded, _ = pipeline_from_state_dict(state, torch.float32)
    for name in ("unet", "vae", "text_encoder"):
        dtypes = {p.dtype for p in getattr(loaded, name).parameters()}
        assert dtypes == {torch.float32}, name


# --- the text encoders and VAE of a FLUX.1 transformer kept alone, chosen by a job ---------


def _split_flux(root: Path) -> tuple[Any, Path]:
    """A lone tiny FLUX transformer in ComfyUI's tree with its parts and a second T5 of other
    weights (`t5_other.safetensors`), so that matching alone cannot choose; the models folder."""
    from safetensors.torch import load_file

    from .flow_export import save_comfy_tree

    original = build_tiny_pipeline("tiny-flux")
    models = root / "ComfyUI" / "models"
    paths = save_comfy_tree(original, models)
    other = {k: v * 2 if v.is_floating_point() else v for k, v in load_file(paths["t5"]).items()}
    save_file(other, models / "text_encoders" / "t5_other.safetensors")
    return original, models


def _t5_weight(loaded: Any) -> torch.Tensor:
    return loaded.sampler.pipe.text_encoder_2.shared.weight


def test_a_jobs_text_encoder_and_vae_are_listed_chosen_and_keyed_in_the_cache(tmp_path: Path) -> None:
    original, models = _split_flux(tmp_path)
    registry = ModelRegistry(
        torch.device("cpu"), torch.float32, [tmp_path / "ComfyUI"], scan_default_locations=False
    )
    listed = {part.name: part.role for part in registry.list_parts()}
    assert listed == {
        "clip_l.safetensors": "clip_l",
        "t5_other.safetensors": "t5",
        "t5xxl_fp16.safetensors": "t5",
        "ae.safetensors": "vae",
    }
    entry = registry.resolve("model.safetensors")
    assert {m.name: m.lacks for m in registry.list_models()}["model.safetensors"] == ("vae", "clip_l", "t5")
    with pytest.raises(UnknownModel, match="several files could be its T5-XXL"):
        registry.load(entry)  # matching alone: two T5s fit
    other = registry.choose_parts(entry, ["t5_other.safetensors"], "ae.safetensors")
    first = registry.load(entry, other)
    expected = original.text_encoder_2.shared.weight * 2
    assert torch.equal(_t5_weight(first), expected)
    assert (
        registry.load(entry, registry.choose_parts(entry, ["t5_other.safetensors"], "ae.safetensors"))
        is first
    )
    registry.max_loaded = 2
    own = registry.load(entry, registry.choose_parts(entry, ["t5xxl_fp16.safetensors"], None))
    assert own is not first and torch.equal(_t5_weight(own), original.text_encoder_2.shared.weight)
    assert registry.load(entry, other) is first  # both kept: one per choice


def test_a_jobs_choice_beats_the_daemons_parts(tmp_path: Path) -> None:
    original, models = _split_flux(tmp_path)
    engine = Engine(
        device="cpu",
        model_dirs=[tmp_path / "ComfyUI"],
        scan_default_locations=False,
        text_encoders=[models / "text_encoders" / "t5xxl_fp16.safetensors"],
        part_paths=False,
    )
    registry = engine.models
    entry = registry.resolve("model.safetensors")
    assert torch.equal(_t5_weight(registry.load(entry)), original.text_encoder_2.shared.weight)
    chosen = registry.load(entry, registry.choose_parts(entry, ["t5_other.safetensors"], None))
    assert torch.equal(_t5_weight(chosen), original.text_encoder_2.shared.weight * 2)
    with pytest.raises(UnknownModel, match="Unknown text encoder"):  # not a path, for the daemon
        registry.choose_parts(entry, [str(models / "text_encoders" / "t5_other.safetensors")], None)


def test_a_part_the_model_cannot_take_is_named(tmp_path: Path) -> None:
    from transformers import T5Config, T5EncoderModel

    from differential_inpaint.backend.engine.errors import InvalidRequest

    from .flow_export import text_to_original

    _, models = _split_flux(tmp_path)
    wide = T5EncoderModel(T5Config(vocab_size=64, d_model=48, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
    save_file(text_to_original(wide), models / "text_encoders" / "t5_wide.safetensors")
    engine = Engine(device="cpu", model_dirs=[tmp_path / "ComfyUI"], scan_default_locations=False)
    registry = engine.models
    entry = registry.resolve("model.safetensors")
    with pytest.raises(InvalidRequest, match="'t5_wide.safetensors' does not fit model 'model.safetensors'"):
        registry.choose_parts(entry, ["t5_wide.safetensors"], None)
    with pytest.raises(InvalidRequest, match="both a T5-XXL text encoder"):
        registry.choose_parts(entry, ["t5_other.safetensors", "t5xxl_fp16.safetensors"], None)
    with pytest.raises(InvalidRequest, match="'ae.safetensors' is a VAE, not a text encoder"):
        registry.choose_parts(entry, ["ae.safetensors"], None)
    with pytest.raises(UnknownModel, match=r"Unknown VAE 'vae.pt'. The VAEs found are: ae.safetensors\."):
        registry.choose_parts(entry, [], "vae.pt")
    tiny = registry.resolve("builtin:tiny-flux")  # a whole pipeline: nothing to choose
    with pytest.raises(InvalidRequest, match="takes no text encoders or VAE of a job's choice"):
        registry.choose_parts(tiny, [], "ae.safetensors")
    image = random_region(64, 64)
    params = JobParams(model="model.safetensors", steps=1, seed=1, vae="nope.safetensors")
    with pytest.raises(UnknownModel, match="Unknown VAE 'nope.safetensors'"):  # the job says so first
        engine.inpaint(image, np.full((64, 64), 255, np.uint8), params)


def test_the_models_command_lists_the_parts_a_model_kept_alone_may_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from differential_inpaint.backend.cli import main

    from .flow_export import save_comfy_tree

    _, models = _split_flux(tmp_path)
    sd3 = save_comfy_tree(build_tiny_pipeline("tiny-sd3"), tmp_path / "elsewhere")
    argv = ["models", "--model-dir", str(tmp_path / "ComfyUI"), "--text-encoder", str(sd3["clip_g"])]
    assert main([*argv, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    model = next(m for m in listed["models"] if m["name"] == "model.safetensors")
    assert model["lacks"] == ["vae", "clip_l", "t5"]
    flow = ["flux", "flux-fill", "flux-schnell", "sd3"]
    assert listed["text_encoders"] == [
        {"name": "clip_g.safetensors", "role": "clip_g", "families": ["sd3"]},  # given: first
        {"name": "clip_l.safetensors", "role": "clip_l", "families": flow},
        {"name": "t5_other.safetensors", "role": "t5", "families": flow},
        {"name": "t5xxl_fp16.safetensors", "role": "t5", "families": flow},
    ]
    assert listed["vaes"] == [{"name": "ae.safetensors", "role": "vae", "families": flow}]
    assert main(argv) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("model.safetensors"))
    assert line.split()[1:3] == ["flux", "comfyui"] and "(lacks vae, clip_l, t5" in line
    section = out.split("Text encoders and VAEs (FLUX.1 / SD3 single files):\n")[1].split("\n\n")[0]
    assert section.splitlines()[0].split() == ["clip_g.safetensors", "[clip_g]", "[sd3]"]
    assert "  ae.safetensors  [vae] [flux, flux-fill, flux-schnell, sd3]" in section.splitlines()
