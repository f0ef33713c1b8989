"""FLUX.1 and SD3 from the files people keep: all-in-one checkpoints and ComfyUI's split
folders, as .safetensors, .sft, pickles, scaled fp8 and quantised GGUF, offline, loading back
as the same model; missing and ambiguous parts and unreadable files named."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from differential_inpaint.backend.engine import Engine, UnknownModel, configs
from differential_inpaint.backend.engine.catalog import classify, why_unusable
from differential_inpaint.backend.engine.checkpoints import read_shapes
from differential_inpaint.backend.engine.flow_models import flow_family
from differential_inpaint.backend.engine.flow_pipeline import FlowDifferentialPipeline
from differential_inpaint.backend.engine.schedulers import make_scheduler
from differential_inpaint.backend.engine.tiny import (
    TINY_WORKING_AREA,
    build_tiny_pipeline,
    tiny_flux_transformer_config,
)
from differential_inpaint.protocol import JobParams

from .conftest import random_region
from .flow_export import (
    save_all_in_one,
    save_comfy_tree,
    save_gguf,
    scale_fp8,
    text_to_original,
    transformer_to_original,
)

COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
NAMES = ["tiny-flux", "tiny-flux-fill", "tiny-sd3"]


def _assert_same_model(original: Any, loaded: Any, cast: torch.dtype | None = None) -> None:
    assert type(loaded) is type(original)
    for component in COMPONENTS:
        left, right = getattr(original, component, None), getattr(loaded, component, None)
        assert (left is None) == (right is None), component
        if left is None:
            continue
        ours, theirs = left.state_dict(), right.state_dict()
        assert ours.keys() == theirs.keys(), component
        for key, value in ours.items():
            expected = (
                value.to(cast).to(value.dtype) if cast is not None and value.is_floating_point() else value
            )
            assert torch.equal(expected, theirs[key].to(expected.dtype)), (component, key)
    for tokenizer in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        if getattr(original, tokenizer, None) is not None:
            ids = [getattr(p, tokenizer)("a red door").input_ids for p in (original, loaded)]
            assert ids[0] == ids[1], tokenizer


def _latents(pipe: Any) -> torch.Tensor:
    strength = torch.linspace(0, 1, 64).repeat(64, 1)[None, None]
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return FlowDifferentialPipeline(pipe)(
        image, strength, prompt="a red door", num_inference_steps=3,
        scheduler=make_scheduler("euler", pipe.scheduler.config),
        generator=torch.Generator().manual_seed(1), output_type="latent",
    )  # fmt: skip


def _load(engine: Engine, name: str) -> Any:
    return engine.models.load(engine.models.resolve(name)).sampler.pipe


@pytest.mark.parametrize("name", NAMES)
def test_an_all_in_one_file_loads_offline_as_the_same_model(tmp_path: Path, name: str) -> None:
    original = build_tiny_pipeline(name)
    save_all_in_one(original, tmp_path / "ComfyUI" / "models" / "checkpoints" / f"{name}.safetensors")
    engine = Engine(device="cpu", model_dirs=[tmp_path / "ComfyUI"], scan_default_locations=False)
    listed = {m.name: m.family for m in engine.list_models()}
    assert listed[f"{name}.safetensors"] == flow_family(original)
    loaded = _load(engine, name)  # HF_HUB_OFFLINE=1: nothing is fetched
    _assert_same_model(original, loaded)
    # Equal weights; as for diffusers folders (test_flow.py), the reloaded model may compute at
    # float rounding of the built one (FLUX Fill: 5e-7), so latents are compared at rounding.
    torch.testing.assert_close(_latents(loaded), _latents(original), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "transformer_folder", "text_folder"),
    [
        ("tiny-flux", "diffusion_models", "text_encoders"),
        ("tiny-flux-fill", "unet", "clip"),
        ("tiny-sd3", "diffusion_models", "clip"),
    ],
)
def test_comfyuis_split_files_are_matched_and_load_as_the_same_model(
    tmp_path: Path, name: str, transformer_folder: str, text_folder: str
) -> None:
    original = build_tiny_pipeline(name)
    models = tmp_path / "ComfyUI" / "models"
    save_comfy_tree(original, models, transformer_folder, text_folder)
    engine = Engine(device="cpu", model_dirs=[tmp_path / "ComfyUI"], scan_default_locations=False)
    listed = {m.name: m.family for m in engine.list_models() if m.source != "builtin"}
    assert listed == {"model.safetensors": flow_family(original)}  # the parts are not models
    loaded = _load(engine, "model.safetensors")
    _assert_same_model(original, loaded)
    # Equal weights; as for diffusers folders (test_flow.py), the reloaded model may compute at
    # float rounding of the built one (FLUX Fill: 5e-7), so latents are compared at rounding.
    torch.testing.assert_close(_latents(loaded), _latents(original), rtol=1e-5, atol=1e-5)


def test_a_missing_vae_or_text_encoder_is_named_with_every_folder_looked_in(tmp_path: Path) -> None:
    models = tmp_path / "ComfyUI" / "models"
    paths = save_comfy_tree(build_tiny_pipeline("tiny-sd3"), models)
    paths["vae"].unlink()
    paths["t5"].unlink()
    engine = Engine(device="cpu", model_dirs=[tmp_path / "ComfyUI"], scan_default_locations=False)
    with pytest.raises(UnknownModel) as error:
        _load(engine, "model.safetensors")
    message = str(error.value)
    assert "no VAE" in message and "no T5-XXL text encoder" in message
    assert "CLIP" not in message  # the CLIPs were found
    for folder in ("diffusion_models", "vae", "text_encoders", "clip"):
        assert str(models / folder) in message
    assert "--vae" in message and "--text-encoder" in message


def test_several_fitting_parts_are_an_error_and_chosen_explicitly(tmp_path: Path) -> None:
    original = build_tiny_pipeline("tiny-flux")
    models = tmp_path / "ComfyUI" / "models"
    paths = save_comfy_tree(original, models)
    (models / "clip").mkdir()
    shutil.copy(paths["t5"], models / "clip" / "t5xxl_other.safetensors")
    engine = Engine(device="cpu", model_dirs=[tmp_path / "ComfyUI"], scan_default_locations=False)
    with pytest.raises(UnknownModel, match="several files could be its T5-XXL text encoder") as error:
        _load(engine, "model.safetensors")
    assert "t5xxl_fp16.safetensors" in str(error.value) and "t5xxl_other.safetensors" in str(error.value)
    chosen = Engine(
        device="cpu",
        model_dirs=[tmp_path / "ComfyUI"],
        scan_default_locations=False,
        text_encoders=[models / "clip" / "t5xxl_other.safetensors"],
    )
    _assert_same_model(original, _load(chosen, "model.safetensors"))


def test_a_lone_transformer_takes_parts_given_explicitly(tmp_path: Path) -> None:
    original = build_tiny_pipeline("tiny-sd3")
    paths = save_comfy_tree(original, tmp_path / "parts")
    lone = tmp_path / "elsewhere" / "sd3.safetensors"
    lone.parent.mkdir()
    paths["transformer"].rename(lone)
    engine = Engine(
        device="cpu",
        scan_default_locations=False,
        text_encoders=[paths["clip_l"], paths["clip_g"], paths["t5"]],
        vae=paths["vae"],
    )
    _assert_same_model(original, _load(engine, str(lone)))
    bare = Engine(device="cpu", scan_default_locations=False)
    with pytest.raises(UnknownModel, match=r"no VAE \(looked in the file and in .*elsewhere"):
        _load(bare, str(lone))


def test_a_part_of_the_wrong_kind_given_explicitly_is_refused(tmp_path: Path) -> None:
    paths = save_comfy_tree(build_tiny_pipeline("tiny-flux"), tmp_path / "models")
    engine = Engine(device="cpu", scan_default_locations=False, vae=paths["t5"])
    with pytest.raises(UnknownModel, match="is not a VAE"):
        _load(engine, str(paths["transformer"]))
    engine = Engine(device="cpu", scan_default_locations=False, text_encoders=[paths["vae"]])
    with pytest.raises(UnknownModel, match="is not a text encoder"):
        _load(engine, str(paths["transformer"]))


def test_parts_for_other_families_given_explicitly_are_left_alone(tmp_path: Path) -> None:
    """`serve` may offer FLUX and SD3 with the parts of both: FLUX ignores CLIP-G."""
    original = build_tiny_pipeline("tiny-flux")
    paths = save_comfy_tree(original, tmp_path / "models")
    sd3_parts = save_comfy_tree(build_tiny_pipeline("tiny-sd3"), tmp_path / "sd3")
    engine = Engine(
        device="cpu",
        scan_default_locations=False,
        text_encoders=[paths["clip_l"], paths["t5"], sd3_parts["clip_g"]],
        vae=paths["vae"],
    )
    _assert_same_model(original, _load(engine, str(paths["transformer"])))


def test_an_sd3_file_with_its_clips_only_runs_without_t5(tmp_path: Path) -> None:
    """sd3_medium_incl_clips.safetensors: no T5, SD3 conditions on zeros in its place."""
    from safetensors.torch import load_file

    path = save_all_in_one(build_tiny_pipeline("tiny-sd3"), tmp_path / "models" / "sd3-clips.safetensors")
    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith("text_encoders.t5xxl.")}
    save_file(state, str(path))
    engine = Engine(device="cpu", model_dirs=[tmp_path / "models"], scan_default_locations=False)
    loaded = _load(engine, "sd3-clips")
    assert loaded.text_encoder_3 is None and loaded.text_encoder_2 is not None
    assert torch.isfinite(_latents(loaded)).all()


@pytest.mark.parametrize("name", ["tiny-flux", "tiny-sd3"])
def test_fp8_files_load_and_keep_fp8_storage(tmp_path: Path, name: str) -> None:
    """e4m3fn files, as ComfyUI's fp8 ones: the transformer's linear layers stay in fp8 and
    compute in the engine's dtype (float32 on the CPU), the rest is converted; the model is
    the original with every weight rounded to fp8, latent for latent."""
    original = build_tiny_pipeline(name)
    save_all_in_one(original, tmp_path / "models" / "fp8.safetensors", dtype=torch.float8_e4m3fn)
    engine = Engine(device="cpu", model_dirs=[tmp_path / "models"], scan_default_locations=False)
    loaded = _load(engine, "fp8")
    _assert_same_model(original, loaded, cast=torch.float8_e4m3fn)
    linear = [m for m in loaded.transformer.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and all(m.weight.dtype == torch.float8_e4m3fn for m in linear)
    assert loaded.transformer.dtype == torch.float32  # the compute dtype
    assert loaded.vae.dtype == loaded.text_encoder.dtype == torch.float32
    rounded = copy.deepcopy(original)
    for component in COMPONENTS:
        module = getattr(rounded, component, None)
        for tensor in [*module.parameters(), *module.buffers()] if module is not None else []:
            if tensor.is_floating_point():
                tensor.data = tensor.data.to(torch.float8_e4m3fn).to(tensor.dtype)
    torch.testing.assert_close(_latents(loaded), _latents(rounded), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("double_blocks.0.img_attn.qkv.weight", "FLUX.1"),
        ("model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", "SD3"),
    ],
)
def test_an_incomplete_transformer_file_is_refused_clearly(tmp_path: Path, key: str, kind: str) -> None:
    path = tmp_path / "model.safetensors"
    save_file({key: torch.zeros(3, 2)}, str(path))
    reason = why_unusable(path)
    assert reason is not None and f"its {kind} transformer is incomplete" in reason
    assert classify(path) is None


def _run_argv(tmp_path: Path, model: Path, *extra: str) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(tmp_path / "mask.png")
    return [
        "run", "--model", str(model), "--image", str(tmp_path / "in.png"),
        "--mask", str(tmp_path / "mask.png"), "--prompt", "a red door", "--steps", "2", "--seed", "1",
        "--out", str(tmp_path / "out.png"), *extra,
    ]  # fmt: skip


def test_run_takes_text_encoders_and_the_vae_as_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from differential_inpaint.backend.cli import main

    paths = save_comfy_tree(build_tiny_pipeline("tiny-flux"), tmp_path / "parts")
    lone = tmp_path / "flux.safetensors"
    paths["transformer"].rename(lone)
    assert main(_run_argv(tmp_path, lone)) != 0
    error = capsys.readouterr().err
    assert "no VAE" in error and "no CLIP-L text encoder" in error and str(tmp_path) in error
    options = [
        "--text-encoder",
        str(paths["clip_l"]),
        "--text-encoder",
        str(paths["t5"]),
        "--vae",
        str(paths["vae"]),
    ]
    assert main(_run_argv(tmp_path, lone, *options)) == 0
    assert (tmp_path / "out.png").is_file()


def test_serve_takes_text_encoders_and_the_vae_as_options() -> None:
    import argparse

    from differential_inpaint.backend.daemon.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--text-encoder", "a.safetensors", "--text-encoder", "b.safetensors", "--vae", "ae.sft"]
    )
    assert args.text_encoder == [Path("a.safetensors"), Path("b.safetensors")] and args.vae == Path("ae.sft")


# -- .sft and pickles --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suffixes"),
    [
        # BFL's own downloads: flux1-dev.sft, ae.sft; parts as pickles.
        ("tiny-flux", {"transformer": ".sft", "vae": ".sft", "clip_l": ".pth", "t5": ".pt"}),
        (
            "tiny-sd3",
            {"transformer": ".ckpt", "vae": ".pth", "clip_l": ".sft", "clip_g": ".pt", "t5": ".ckpt"},
        ),
    ],
)
def test_sft_files_and_pickled_state_dicts_load_as_the_same_model(
    tmp_path: Path, name: str, suffixes: dict[str, str]
) -> None:
    original = build_tiny_pipeline(name)
    paths = save_comfy_tree(original, tmp_path / "ComfyUI" / "models", suffixes=suffixes)
    assert {role: paths[role].suffix for role in suffixes} == suffixes
    engine = Engine(device="cpu", model_dirs=[tmp_path / "ComfyUI"], scan_default_locations=False)
    listed = {m.name: m.family for m in engine.list_models() if m.source != "builtin"}
    model = "model" + suffixes["transformer"]
    assert listed == {model: flow_family(original)}
    _assert_same_model(original, _load(engine, model))


# -- ComfyUI's scaled fp8 ------------------------------------------------------------------


def _unscaled(scaled: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a scaled fp8 state dict holds: weight * scale_weight in float32, exactly."""
    return {
        k: v.float() * scaled[k.removesuffix("weight") + "scale_weight"]
        if k.removesuffix("weight") + "scale_weight" in scaled
        else v
        for k, v in scaled.items()
        if not k.endswith(("scaled_fp8", ".scale_weight", ".scale_input"))
    }


def test_comfyuis_scaled_fp8_t5_and_transformer_load_unscaled(tmp_path: Path) -> None:
    """t5xxl_fp8_e4m3fn_scaled.safetensors and a scaled fp8 transformer: every weight is the
    file's fp8 weight times its scale (the fp8 rounding of the original, scaled back), in the
    compute dtype; weights stored unscaled stay as they are."""
    original = build_tiny_pipeline("tiny-flux")
    models = tmp_path / "ComfyUI" / "models"
    paths = save_comfy_tree(original, models)
    t5 = scale_fp8(text_to_original(original.text_encoder_2))
    paths["t5"].unlink()
    save_file(t5, str(models / "text_encoders" / "t5xxl_fp8_e4m3fn_scaled.safetensors"))
    transformer = scale_fp8(transformer_to_original(original.transformer))
    save_file(transformer, str(paths["transformer"]))
    engine = Engine(device="cpu", model_dirs=[tmp_path / "ComfyUI"], scan_default_locations=False)
    loaded = _load(engine, "model.safetensors")
    expected_t5, expected_transformer = _unscaled(t5), _unscaled(transformer)
    scaled = [k for k in expected_t5 if expected_t5[k].dtype != t5[k].dtype]
    assert len(scaled) > 10  # every linear weight of the T5
    loaded_t5 = text_to_original(loaded.text_encoder_2)
    assert loaded_t5.keys() == expected_t5.keys()
    for key, value in expected_t5.items():
        assert loaded_t5[key].dtype == torch.float32
        assert torch.equal(loaded_t5[key], value), key
    loaded_transformer = transformer_to_original(loaded.transformer)
    for key, value in expected_transformer.items():
        assert torch.equal(loaded_transformer[key], value), key
    # The scale restores the magnitude; what is left is e4m3fn's rounding (3 mantissa bits).
    weight = "encoder.block.0.layer.0.SelfAttention.q.weight"
    exact = text_to_original(original.text_encoder_2)[weight]
    assert not torch.equal(loaded_t5[weight], exact)
    torch.testing.assert_close(loaded_t5[weight], exact, rtol=2**-4, atol=exact.abs().max().item() * 2**-9)
    assert torch.isfinite(_latents(loaded)).all()


# -- GGUF --------------------------------------------------------------------------------------


def _wide_flux() -> Any:
    """tiny-flux with a 256-wide transformer (16 heads), so that its rows are whole Q5_K /
    Q4_K blocks (256 weights); its parts are tiny-flux's."""
    from diffusers import FluxTransformer2DModel

    pipe = copy.deepcopy(build_tiny_pipeline("tiny-flux"))
    torch.manual_seed(0)
    config = {**tiny_flux_transformer_config("flux"), "num_attention_heads": 16}
    pipe.transformer = FluxTransformer2DModel.from_config(config).eval().requires_grad_(False)
    return pipe


# (model, quantisation, largest latent difference to the unquantised model after 3 steps):
# measured (latents up to 3.7) FLUX Q8_0 3.8e-3, Q5_K 8.4e-3, Q4_K 1.4e-2, SD3 Q8_0 4.6e-3;
# the bounds leave about 3x.
GGUF_CASES = [
    ("tiny-flux", "Q8_0", 1e-2),
    ("tiny-flux-wide", "Q5_K", 2.5e-2),
    ("tiny-flux-wide", "Q4_K", 4e-2),
    ("tiny-sd3", "Q8_0", 1.5e-2),
]


@pytest.mark.parametrize(("name", "qtype", "tolerance"), GGUF_CASES)
def test_gguf_transformers_load_quantised_as_gguf_dequantises_them(
    tmp_path: Path, name: str, qtype: str, tolerance: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """city96's files in ComfyUI's models/unet: found, their parts matched as for a split
    .safetensors; the weights stay quantised, dequantise to what gguf's own dequantisation
    of the file gives, and the model samples close to the unquantised one."""
    import gguf
    from diffusers.quantizers.gguf.utils import GGUFLinear, dequantize_gguf_tensor

    kind = gguf.GGMLQuantizationType[qtype]
    original = _wide_flux() if name == "tiny-flux-wide" else build_tiny_pipeline(name)
    family = flow_family(original)
    models = tmp_path / "ComfyUI" / "models"
    save_comfy_tree(original, models, "unet")["transformer"].unlink()
    path = save_gguf(original.transformer, models / "unet" / f"{name}-{qtype}.gguf", kind)
    # Jobs run at the built-in tiny models' working area, not FLUX.1's / SD3's megapixel.
    monkeypatch.setitem(configs.WORKING_AREA, family, TINY_WORKING_AREA)
    engine = Engine(device="cpu", model_dirs=[tmp_path / "ComfyUI"], scan_default_locations=False)
    listed = {m.name: m.family for m in engine.list_models() if m.source != "builtin"}
    assert listed == {path.name: family}
    loaded = _load(engine, path.name)

    # Shapes as the engine reads them are the logical ones, quantised or not.
    original_weights = transformer_to_original(original.transformer)
    assert read_shapes(path) == {k: tuple(v.shape) for k, v in original_weights.items()}
    written = {t.name: t for t in gguf.GGUFReader(path).tensors}
    kinds = {t.tensor_type for t in written.values()}
    assert kinds == {kind, *(gguf.GGMLQuantizationType[k] for k in ("F32", "F16", "BF16"))}
    quantised = [m for m in loaded.transformer.modules() if isinstance(m, GGUFLinear)]
    assert quantised and all(m.weight.quant_type == kind for m in quantised)
    plain = [p for p in loaded.transformer.parameters() if not hasattr(p, "quant_type")]
    assert plain and all(p.dtype == torch.float32 for p in plain)  # the compute dtype
    assert sum(t.tensor_type == kind for t in written.values()) > 10
    dequantised = {k: dequantize_gguf_tensor(v).float() for k, v in loaded.transformer.state_dict().items()}
    weights = transformer_to_original(loaded.transformer, dequantised)
    assert weights.keys() == written.keys()
    for key, tensor in written.items():
        expected = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).copy())
        expected = expected.reshape(weights[key].shape)
        if tensor.tensor_type in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F16):
            # diffusers dequantises in float16: d * q (exact in float32) rounded once.
            assert torch.equal(weights[key], expected.half().float()), key
        elif tensor.tensor_type == kind:
            # K-quants: d * scale, dmin * min, their product with q and the difference each
            # rounded to float16 by diffusers; measured at most 2^-9.1 of the largest weight.
            atol = 2**-8 * expected.abs().max().item()
            torch.testing.assert_close(weights[key], expected, rtol=0, atol=atol, msg=key)
        else:  # F32, BF16: the file's values
            assert torch.equal(weights[key], expected), key
    for component in COMPONENTS[1:]:
        if getattr(original, component, None) is not None:
            theirs = getattr(loaded, component).state_dict()
            assert all(
                torch.equal(v, theirs[k]) for k, v in getattr(original, component).state_dict().items()
            )

    difference = (_latents(loaded) - _latents(original)).abs().max().item()
    assert 0 < difference < tolerance
    # A job as the engine runs it: mask-0 pixels kept bit for bit.
    image = random_region(48, 56, seed=3)
    mask = np.zeros((48, 56), np.uint8)
    mask[8:40, 16:48] = 255
    mask[8:40, 16:24] = 100
    result = engine.inpaint(image, mask, JobParams(prompt="a red door", steps=3, seed=5), model=path.name)
    kept = mask == 0
    assert np.array_equal(result.image[kept][:, :3], image[kept][:, :3])
    assert np.abs(result.image[~kept][:, :3] - image[~kept][:, :3]).mean() > 0.01


# -- files that cannot be used -------------------------------------------------------------------


def _gguf(path: Path, architecture: str, tensors: dict[str, tuple[np.ndarray, Any]]) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    for name, (data, raw_dtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _unusable(path: Path, reason: str) -> None:
    assert classify(path) is None
    why = why_unusable(path)
    assert why is not None and reason in why, why
    engine = Engine(device="cpu", scan_default_locations=False)
    with pytest.raises(UnknownModel) as error:
        engine.models.resolve(str(path))
    assert f"Cannot use '{path.name}' as a model" in str(error.value) and reason in str(error.value)


def test_a_gguf_of_another_architecture_is_refused_naming_it(tmp_path: Path) -> None:
    tensors = {"token_embd.weight": (np.zeros((4, 32), np.float32), None)}
    path = _gguf(tmp_path / "llama-3-8b.Q4_K_M.gguf", "llama", tensors)
    _unusable(path, "a GGUF file of a 'llama' model")


def test_a_gguf_quantisation_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    import gguf

    kind = gguf.GGMLQuantizationType.IQ2_XXS
    blocks = np.zeros((2, gguf.GGML_QUANT_SIZES[kind][1]), np.uint8)  # 2 rows of 256 weights
    key = "double_blocks.0.img_attn.qkv.weight"
    path = _gguf(tmp_path / "flux1-dev-IQ2_XXS.gguf", "flux", {key: (blocks, kind)})
    _unusable(path, f"its weight {key} is quantised as IQ2_XXS, which cannot be read")


def test_a_truncated_gguf_is_refused_as_damaged(tmp_path: Path) -> None:
    import gguf

    transformer = build_tiny_pipeline("tiny-flux").transformer
    path = save_gguf(transformer, tmp_path / "flux.gguf", gguf.GGMLQuantizationType.Q8_0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _unusable(path, "it is not a readable .gguf file (damaged or incomplete?)")
    path.write_bytes(b"not a gguf file at all")
    _unusable(path, "it is not a readable .gguf file (damaged or incomplete?)")


def test_a_pickle_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save([torch.zeros(2), "a list"], path)
    _unusable(path, "the file holds no state dict")
    path.write_bytes(b"\x80\x02 damaged")
    _unusable(path, "it is not a readable .pt file (damaged or incomplete?)")
