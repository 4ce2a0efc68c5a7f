"""The adapters of Wan I2V, Wan-VACE, Wan-Animate, SkyReels-V2, Cosmos and Mochi on tiny offline models built from
the configs below: the layout each adapter states is where the tokens are, `apply`/`remove` restore the stock
processors, dense equals stock to the bit, and a sparse step equals the library's reference masked attention.

Every tiny model has 2 heads x 64 and latents of 3 x 10 x 14 (grid 3 x 5 x 7 = 105 video tokens after 1 x 2 x 2
patches), batch 2 with different timesteps.
"""

import pytest
import torch
from diffusers import (
    CosmosTransformer3DModel,
    MochiTransformer3DModel,
    SkyReelsV2Transformer3DModel,
    WanAnimateTransformer3DModel,
    WanTransformer3DModel,
    WanVACETransformer3DModel,
)

import vidsparse
from vidsparse import SparseConfig
from vidsparse.core.layout import HILBERT, SPATIAL_MAJOR, TokenOrder
from vidsparse.core.plan import AttentionPlan
from vidsparse.methods.base import Planner
from vidsparse.pipelines import adapter_for
from vidsparse.pipelines.apply import attn_processors
from vidsparse.pipelines.processors import SparseAttnProcessor

SPATIAL = SparseConfig.make(method="spatial", frames=0, q_block=16, k_block=16)
WAN = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=64, text_dim=32, freq_dim=32, ffn_dim=64,
           num_layers=2, rope_max_seq_len=64)
WAN_TEXT = 512  # Wan's image-conditioned cross-attention splits off the image tokens before the last 512
MOCHI_TEXT, MOCHI_PADDED = 8, 3  # batch element 1 has its last 3 text tokens padded


def _seeded(build):
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        return build().eval()
    finally:
        torch.random.set_rng_state(state)


def _randn(gen, *shape):
    return torch.randn(*shape, generator=gen)


def _video(gen, channels=4):
    return {"hidden_states": _randn(gen, 2, channels, 3, 10, 14), "timestep": torch.tensor([100.0, 700.0])}


def wan_i2v():
    """Wan2.1-I2V: 12 = 4 noise + 4 mask + 4 image-latent channels, CLIP image tokens through added k/v."""
    model = _seeded(lambda: WanTransformer3DModel(**WAN, in_channels=12, out_channels=4, image_dim=16,
                                                  added_kv_proj_dim=128))
    gen = torch.Generator().manual_seed(0)
    return model, {**_video(gen, 12), "encoder_hidden_states": _randn(gen, 2, WAN_TEXT, 32),
                   "encoder_hidden_states_image": _randn(gen, 2, 4, 16)}


def wan_vace():
    model = _seeded(lambda: WanVACETransformer3DModel(**WAN, in_channels=4, out_channels=4, vace_layers=[0, 1],
                                                      vace_in_channels=8))
    gen = torch.Generator().manual_seed(0)
    return model, {**_video(gen), "encoder_hidden_states": _randn(gen, 2, 16, 32),
                   "control_hidden_states": _randn(gen, 2, 8, 3, 10, 14)}


def wan_animate():
    """Frame 0 is the reference image; 5 face frames of 8 x 8 encode to 2 motion frames, one per pose frame."""
    model = _seeded(lambda: WanAnimateTransformer3DModel(
        **WAN, in_channels=12, latent_channels=4, out_channels=4, image_dim=16, added_kv_proj_dim=128,
        motion_encoder_channel_sizes={"8": 8, "4": 8}, motion_encoder_size=8, motion_style_dim=16, motion_dim=4,
        motion_encoder_dim=16, face_encoder_hidden_dim=16, face_encoder_num_heads=2, inject_face_latents_blocks=2))
    gen = torch.Generator().manual_seed(0)
    return model, {**_video(gen, 12), "encoder_hidden_states": _randn(gen, 2, WAN_TEXT, 32),
                   "encoder_hidden_states_image": _randn(gen, 2, 4, 16),
                   "pose_hidden_states": _randn(gen, 2, 4, 2, 10, 14), "face_pixel_values": _randn(gen, 2, 3, 5, 8, 8)}


def skyreels_v2(frames_per_block=1):
    model = _seeded(lambda: SkyReelsV2Transformer3DModel(**WAN, in_channels=4, out_channels=4,
                                                         num_frame_per_block=frames_per_block))
    gen = torch.Generator().manual_seed(0)
    return model, {**_video(gen), "encoder_hidden_states": _randn(gen, 2, 16, 32)}


def cosmos():
    """Cosmos-1.0's block, without the padding-mask channel (its resize needs torchvision)."""
    model = _seeded(lambda: CosmosTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=64, num_layers=2, text_embed_dim=32,
        adaln_lora_dim=16, max_size=(8, 16, 16), concat_padding_mask=False))
    gen = torch.Generator().manual_seed(0)
    return model, {**_video(gen), "timestep": torch.tensor([0.3, 0.9]),
                   "encoder_hidden_states": _randn(gen, 2, 16, 32), "fps": 30}


def mochi():
    """Mochi's RoPE frequencies are learned (zeros at init, which would make RoPE the identity): drawn here."""
    model = _seeded(lambda: MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=64, num_layers=2, pooled_projection_dim=16,
        in_channels=4, text_embed_dim=32, time_embed_dim=32))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.pos_frequencies.copy_(_randn(gen, *model.pos_frequencies.shape) * 0.3)
    mask = torch.ones(2, MOCHI_TEXT, dtype=torch.long)
    mask[1, MOCHI_TEXT - MOCHI_PADDED :] = 0
    return model, {**_video(gen), "encoder_hidden_states": _randn(gen, 2, MOCHI_TEXT, 32),
                   "encoder_attention_mask": mask}


FAMILIES = {"wan-i2v": wan_i2v, "wan-vace": wan_vace, "wan-animate": wan_animate, "skyreels-v2": skyreels_v2,
            "cosmos": cosmos, "mochi": mochi}
ADAPTER = {"wan-i2v": "wan", "wan-vace": "wan-vace", "wan-animate": "wan-animate", "skyreels-v2": "skyreels-v2",
           "cosmos": "cosmos", "mochi": "mochi"}
pytestmark = pytest.mark.filterwarnings("ignore:In CPU autocast:UserWarning")  # Mochi's RoPE asks for fp32 autocast


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


class _KeyRecorder(Planner):
    """Plans every call dense and keeps the first replaced layer's layout and keys."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def plan(self, ctx, probe):
        if ctx.layer == 0:
            self.seen.append((ctx.layout, probe.k.detach().clone()))
        return AttentionPlan.dense(ctx.heads)


def _moved_keys(model, inputs, changed):
    """The layout of the first replaced layer, and the token positions whose keys differ between the two inputs."""
    recorder = _KeyRecorder()
    with vidsparse.apply(model, "dense", planner=recorder):
        _run(model, inputs)
        _run(model, changed)
    (layout, k0), (_, k1) = recorder.seen
    assert layout.seq_len == k0.shape[2]
    return layout, ((k0 - k1).abs().amax(dim=(0, 1, 3)) > 0).nonzero().flatten().tolist()


def _changed(inputs, key, edit):
    out = dict(inputs)
    out[key] = inputs[key].clone()
    edit(out[key])
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_layout_is_where_the_tokens_are_and_its_orders_round_trip(family):
    """A change of one latent frame (or one row of patches) moves exactly the keys the layout puts at that frame (or
    row), and a change of the text moves exactly the keys in the layout's text range."""
    model, inputs = FAMILIES[family]()
    assert adapter_for(model).name == ADAPTER[family]
    layout, moved = _moved_keys(model, inputs, _changed(inputs, "hidden_states", lambda x: x[:, :, 1].add_(1.0)))
    assert (layout.frames, layout.height, layout.width) == (3, 5, 7)
    frame, row, _ = layout.video_coords()
    assert moved == ((frame == 1).nonzero().flatten() + layout.video_start).tolist()
    _, moved = _moved_keys(model, inputs, _changed(inputs, "hidden_states", lambda x: x[:, :, :, 4:6].add_(1.0)))
    assert moved == ((row == 2).nonzero().flatten() + layout.video_start).tolist()

    if family == "mochi":  # the text is last; a padded token's content reaches only its own key
        _, moved = _moved_keys(model, inputs, _changed(inputs, "encoder_hidden_states", lambda x: x[1, -2].add_(1.0)))
        assert layout.text_range == (105, 105 + MOCHI_TEXT) and moved == [105 + MOCHI_TEXT - 2]
    else:  # self-attention over the video alone: the text moves no key
        _, moved = _moved_keys(model, inputs, _changed(inputs, "encoder_hidden_states", lambda x: x.add_(1.0)))
        assert layout.text_range is None and moved == []

    x = torch.randn(layout.seq_len, 3)
    for order in (SPATIAL_MAJOR, TokenOrder.voxel(2, 2, 4), HILBERT):
        perm, inv = order.permutation(layout), order.inverse(layout)
        assert torch.equal(x[perm][inv], x)
        if layout.text_range is not None:
            start, stop = layout.text_range
            assert torch.equal(perm[start:stop], torch.arange(start, stop))


@pytest.mark.parametrize("family", FAMILIES)
def test_apply_and_remove_restore_the_stock_processors(family):
    model, inputs = FAMILIES[family]()
    before = attn_processors(model)
    stock = _run(model, inputs)
    handle = vidsparse.apply(model, SPATIAL)
    replaced = {key for key, p in attn_processors(model).items() if isinstance(p, SparseAttnProcessor)}
    assert replaced == {key for key in before if ".attn1." in key} and len(replaced) >= 2
    handle.remove()
    after = attn_processors(model)
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert torch.equal(_run(model, inputs), stock)


@pytest.mark.parametrize("family", FAMILIES)
def test_dense_equals_stock_bit_for_bit(family):
    model, inputs = FAMILIES[family]()
    stock = _run(model, inputs)
    with vidsparse.apply(model, "dense") as handle:
        assert torch.equal(_run(model, inputs), stock)
        report = handle.report()
    assert report["density"] == 1.0 and report["fallbacks"] == [] and report["calls"] >= 2


@pytest.mark.parametrize("family", FAMILIES)
def test_a_sparse_step_equals_the_reference_masked_attention(family):
    model, inputs = FAMILIES[family]()
    stock = _run(model, inputs)
    with vidsparse.apply(model, SPATIAL) as handle:
        kernel_out = _run(model, inputs)
        report = handle.report()
    with vidsparse.apply(model, SPATIAL.replace(backend="reference")) as handle:
        reference_out = _run(model, inputs)
        assert handle.report()["fallbacks"] == []
    assert report["sparse_calls"] == report["calls"] and 0.0 < report["density"] < 1.0
    assert _rel(kernel_out, reference_out) < 1e-5
    assert _rel(kernel_out, stock) > 1e-4  # the pattern really dropped keys


@pytest.mark.parametrize("family", ["wan-i2v", "wan-vace", "wan-animate", "skyreels-v2", "cosmos", "mochi"])
def test_density_one_through_the_kernel_equals_stock_fused_projections_included(family):
    model, inputs = FAMILIES[family]()
    stock = _run(model, inputs)
    if hasattr(model, "fuse_qkv_projections"):  # the Wan-architecture families (Cosmos and Mochi have none)
        model.fuse_qkv_projections()
        assert all(getattr(m, "fused_projections", True) for name, m in model.named_modules() if name.endswith("attn1"))
    with vidsparse.apply(model, SPATIAL.replace(frames=64)) as handle:  # every frame: density 1 through the kernel
        out = _run(model, inputs)
        report = handle.report()
    assert report["sparse_calls"] == report["calls"] > 0 and report["density"] == pytest.approx(1.0)
    assert _rel(out, stock) < 1e-5


def test_mochi_padded_text_stays_masked_when_sparse():
    model, inputs = mochi()
    with vidsparse.apply(model, SPATIAL):
        out = _run(model, inputs)
        out_changed = _run(model, _changed(inputs, "encoder_hidden_states", lambda x: x[1, -MOCHI_PADDED:].mul_(10.0)))
    assert torch.equal(out[1], out_changed[1])


def test_skyreels_diffusion_forcing_block_causal_mask_runs_stock_and_says_so():
    model, inputs = skyreels_v2(frames_per_block=2)
    inputs.update(hidden_states=torch.randn(2, 4, 4, 10, 14), timestep=torch.tensor([[900.0, 900, 500, 500]] * 2),
                  enable_diffusion_forcing=True)  # 4 frames in 2 causal blocks, a timestep per frame
    stock = _run(model, inputs)
    with vidsparse.apply(model, SPATIAL) as handle:
        assert torch.equal(_run(model, inputs), stock)
        report = handle.report()
    assert report["density"] == 1.0 and report["sparse_calls"] == 0
    assert any("causal_block_size > 1" in reason for reason in report["fallbacks"])


@pytest.mark.parametrize("name", ["wan2.1-i2v-14b-480p", "wan2.1-i2v-14b-720p", "wan2.1-vace-14b", "wan2.2-animate-14b",
                                  "skyreels-v2-df-14b-540p", "cosmos-1.0-diffusion-7b-text2world", "mochi-1-preview"])
def test_each_preset_names_a_supported_transformer_of_its_pipeline(name):
    import diffusers

    from vidsparse.app.configs import load_model_config
    from vidsparse.pipelines import supported_classes

    cfg = load_model_config(name)
    assert cfg.model.transformer in supported_classes()
    pipeline = getattr(diffusers, cfg.model.pipeline)
    assert cfg.model.transformer in str(pipeline.__init__.__annotations__.get("transformer", ""))
