"""Trainer overhead: cxrkit's MAE step vs minimal hand-written PyTorch steps, same process.

Three ways to take one AdamW step of an MAE with the same encoder size, decoder
size and batch (random images; the data loader is not timed):

- cxrkit:      ``Trainer.train_step`` (Accelerate, LossModule, clipping, named losses);
- plain loop:  the same cxrkit MAE objective with a bare ``loss.backward(); step()``;
- hand MAE:    an MAE written here in ~30 lines on the same timm ViT blocks
               (argsort masking, visible-token encoder, small decoder, masked MSE).

Timings are interleaved (A, B, C, A, B, C, ...) and the median is reported, so
a busy machine slows all three alike. Prints seconds per step and the ratios
cxrkit / plain and cxrkit / hand (target <= 1.1).
Run: OMP_NUM_THREADS=2 python benchmarks/train_step.py [--method mae|maco|mmclip|m3ae] [--size 224] [--batch 8]

With ``--method maco``: cxrkit's Trainer step on the MaCo objective, the objective in a
bare loop, a hand-written MaCo step (same shapes: timm ViT on the visible half of the
patches, decoder to the 2x target, the same Hugging Face text tower, mean pooling,
projections, correlation weight and the four cross-entropy terms written out), and
cxrkit's MAE step on the same encoder, decoder and mask ratio. Reports are tokenised
once, outside the timing (the loader does it in its workers).

``--method mmclip`` times instead one optimiser step of MMCLIP (alignment + AttMIM +
EntMLM, :func:`mmclip_vs_clip`) against a plain CLIP step (alignment only) on the same
towers, and MaCo's step on the same image tower when the ``maco`` objective is
installed; MMCLIP reports about 1.33x its CLIP baseline's time per epoch (Table 7:
2.40 h vs 1.80 h).

``--method m3ae``: cxrkit's Trainer step on the M3AE objective vs a hand-written M3AE
step (:class:`HandM3AE`: the same timm ViT and Hugging Face text tower, co-attention
layers on torch's MultiheadAttention, the three passes and losses written out).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from cxrkit.objectives.base import build_objective
from cxrkit.train.config import OptimConfig, TrainConfig
from cxrkit.train.loop import Trainer


class HandMAE(nn.Module):
    """Minimal MAE: timm ViT encoder on visible patches, linear-embed + blocks decoder."""

    def __init__(self, size: int, patch: int, decoder_dim: int, decoder_depth: int) -> None:
        super().__init__()
        import timm
        from timm.models.vision_transformer import Block

        self.patch, self.ratio = patch, 0.75
        self.vit = timm.create_model(
            "vit_tiny_patch16_224",
            pretrained=False,
            num_classes=0,
            img_size=size,
            patch_size=patch,
            in_chans=1,
        )
        length = (size // patch) ** 2
        self.embed = nn.Linear(self.vit.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.dec_pos = nn.Parameter(torch.zeros(1, length + 1, decoder_dim))
        self.blocks = nn.Sequential(
            *[Block(decoder_dim, 16, qkv_bias=True) for _ in range(decoder_depth)]
        )
        self.norm = nn.LayerNorm(decoder_dim)
        self.head = nn.Linear(decoder_dim, patch * patch)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.vit.patch_embed(images) + self.vit.pos_embed[:, 1:]  # (B, L, D)
        batch, length, dim = x.shape
        keep = int(length * (1 - self.ratio))
        order = torch.rand(batch, length).argsort(dim=1)
        restore = order.argsort(dim=1)
        x = torch.gather(x, 1, order[:, :keep, None].expand(-1, -1, dim))  # (B, K, D)
        cls = self.vit.cls_token + self.vit.pos_embed[:, :1]
        x = self.vit.norm(self.vit.blocks(torch.cat([cls.expand(batch, -1, -1), x], 1)))
        y = self.embed(x)  # (B, 1 + K, d)
        masks = self.mask_token.expand(batch, length - keep, -1)
        tokens = torch.gather(
            torch.cat([y[:, 1:], masks], 1), 1, restore[..., None].expand(-1, -1, y.shape[-1])
        )  # (B, L, d)
        y = self.head(self.norm(self.blocks(torch.cat([y[:, :1], tokens], 1) + self.dec_pos)))
        pred = y[:, 1:]  # (B, L, p*p)
        target = nn.functional.unfold(images, self.patch, stride=self.patch).transpose(1, 2)
        hidden = torch.ones(batch, length)
        hidden[:, :keep] = 0
        hidden = torch.gather(hidden, 1, restore)  # (B, L) 1 = masked
        return ((((pred - target) ** 2).mean(-1)) * hidden).sum() / hidden.sum()


REPORT = (
    "Mild cardiomegaly. Small left pleural effusion and right basilar atelectasis. "
    "No pneumothorax. Degenerative changes of the thoracic spine."
)
ENTITIES = ("cardiomegaly", "pleural effusion", "atelectasis", "pneumothorax", "spine")


class HandMaCo(nn.Module):
    """Minimal MaCo: HandMAE's pieces at 50 % masking plus text tower, projections, weights."""

    def __init__(self, size: int, patch: int, decoder_dim: int, decoder_depth: int) -> None:
        super().__init__()
        from transformers import AutoModel

        from cxrkit.io.bundled import minilm_dir

        self.mae = HandMAE(size, patch, decoder_dim, decoder_depth)
        self.mae.ratio = 0.5
        self.mae.head = nn.Linear(decoder_dim, 4 * patch * patch)  # 2x target: (2p)^2 pixels
        self.text = AutoModel.from_pretrained(str(minilm_dir()), add_pooling_layer=False)
        width = self.mae.vit.embed_dim
        self.image_proj = nn.Linear(width, 64)
        self.text_proj = nn.Linear(self.text.config.hidden_size, 64, bias=False)
        self.corr = nn.Linear((size // patch) ** 2, 1)
        self.tau = nn.Parameter(torch.tensor(1 / 0.03))

    def forward(self, images: torch.Tensor, big: torch.Tensor, ids, attention) -> torch.Tensor:
        mae, vit = self.mae, self.mae.vit
        x = vit.patch_embed(images) + vit.pos_embed[:, 1:]  # (B, L, D)
        batch, length, dim = x.shape
        keep = int(length * (1 - mae.ratio))
        order = torch.rand(batch, length).argsort(dim=1)
        restore = order.argsort(dim=1)
        x = torch.gather(x, 1, order[:, :keep, None].expand(-1, -1, dim))
        cls = vit.cls_token + vit.pos_embed[:, :1]
        x = vit.norm(vit.blocks(torch.cat([cls.expand(batch, -1, -1), x], 1)))  # (B, 1+K, D)
        y = mae.embed(x)
        fill = mae.mask_token.expand(batch, length - keep, -1)
        tokens = torch.gather(
            torch.cat([y[:, 1:], fill], 1), 1, restore[..., None].expand(-1, -1, y.shape[-1])
        )
        pred = mae.head(mae.norm(mae.blocks(torch.cat([y[:, :1], tokens], 1) + mae.dec_pos)))
        p2 = 2 * mae.patch
        target = nn.functional.unfold(big, p2, stride=p2).transpose(1, 2)  # (B, L, 4p^2)
        hidden = torch.ones(batch, length)
        hidden[:, :keep] = 0
        hidden = torch.gather(hidden, 1, restore)
        rec = ((((pred[:, 1:] - target) ** 2).mean(-1)) * hidden).sum() / hidden.sum()
        v = nn.functional.normalize(self.image_proj(x[:, 1:].mean(1)), dim=-1)
        h = self.text(input_ids=ids, attention_mask=attention).last_hidden_state
        m = attention[..., None].float()
        t = nn.functional.normalize(self.text_proj((h * m).sum(1) / m.sum(1)), dim=-1)
        w = nn.functional.softplus(self.corr(1 - hidden)).squeeze(-1)  # (B,)
        s = self.tau * v @ t.T
        gt = torch.arange(batch)
        ce = nn.functional.cross_entropy
        con = (
            ce(s * w[:, None], gt)
            + ce(s.T * w[:, None], gt)
            + ce(s, gt, weight=w.detach())
            + ce(s.T, gt, weight=w.detach())
        ) / 4
        return 0.9 * rec + 0.1 * con


def _interleaved(steps: dict, rounds: int) -> dict[str, float]:
    """Median seconds per call of each step, timed round-robin after 2 warm-up rounds."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(rounds + 2):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_index >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def mmclip_vs_clip(args: argparse.Namespace) -> None:
    """One SGD step of MMCLIP vs a CLIP step (and MaCo's, if installed) on the same towers."""
    from cxrkit.objectives.base import available
    from cxrkit.objectives.contrastive import symmetric_infonce
    from cxrkit.text.prompts import load_prompts

    device = torch.device(args.device)
    if args.full:  # the clip-vitb16 towers of the mmclip preset
        model = {"arch": "vit_base_patch16_clip_224", "image_size": 224, "patch_size": 16}
        text = {
            "kind": "open_clip",
            "open_clip_model": "ViT-B-16",
            "context_length": 77,
            "pooling": "eos",
        }
        sizes = {"embed_dim": 512}
    else:  # the demo-mmclip towers
        model = {"arch": "vit_base_patch16_clip_224", "image_size": args.size, "patch_size": 8,
                 "depth": 4, "embed_dim": 128, "num_heads": 4}  # fmt: skip
        text = {"kind": "open_clip", "open_clip_model": "ViT-B-16", "width": 128, "layers": 2,
                "heads": 4, "context_length": 77, "pooling": "eos"}  # fmt: skip
        sizes = {"embed_dim": 64, "decoder_dim": 64, "decoder_depth": 2, "decoder_heads": 4,
                 "mlm_depth": 1, "mlm_heads": 4}  # fmt: skip
    torch.manual_seed(0)
    mmclip = build_objective(
        "mmclip", {"model": model, "text": text, **sizes, "warmup_steps": 0}
    ).to(device)
    mmclip.on_dataset_fields({"prompts": load_prompts(None)})
    size = model["image_size"]
    images = torch.randn(args.batch, 1, size, size, device=device)
    transform = mmclip.sample_transform()
    entities = []
    for word in ENTITIES:
        start = REPORT.lower().index(word)
        entities.append({"start": start, "end": start + len(word), "text": word})
    samples = [
        transform({"text": REPORT, "entities": entities, "seed": i})["tokens"]
        for i in range(args.batch)
    ]
    tokens = {k: torch.stack([s[k] for s in samples]).to(device) for k in samples[0]}
    batch = {"image": images, "text": [REPORT] * args.batch, "tokens": tokens}

    def sgd(module: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(module.parameters(), lr=5e-5, momentum=0.9)

    opt = sgd(mmclip)

    def mmclip_step() -> None:
        mmclip.loss(batch, step=1)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    # Plain CLIP on the same towers: pooled image and report vectors, symmetric InfoNCE.
    def clip_step() -> None:
        i2t, t2i = symmetric_infonce(
            mmclip.encode_image(images), mmclip.encode_text(tokens), mmclip._scale()
        )
        (i2t + t2i).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    steps = {"clip": clip_step, "mmclip": mmclip_step}
    if "maco" in available():
        maco = build_objective(
            "maco", {"model": model, "text": text, "embed_dim": sizes["embed_dim"]}
        ).to(device)
        maco_opt = sgd(maco)
        maco_batch = {"image": images, "text": batch["text"]}
        maco_transform = maco.sample_transform()
        if maco_transform is not None:  # its own tokenizer, run as the loader would
            outs = [
                maco_transform({"text": REPORT, "entities": entities, "seed": i})
                for i in range(args.batch)
            ]
            for key in outs[0]:
                maco_batch[key] = {
                    k: torch.stack([o[key][k] for o in outs]).to(device) for k in outs[0][key]
                }

        def maco_step() -> None:
            maco.loss(maco_batch, step=1)["loss"].backward()
            maco_opt.step()
            maco_opt.zero_grad(set_to_none=True)

        steps["maco"] = maco_step

    def synced(step):
        def run() -> None:
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()

        return run

    median = _interleaved({k: synced(v) for k, v in steps.items()}, args.steps)
    print(
        f"{'clip-vitb16' if args.full else 'demo-mmclip'} towers, {size}px, batch {args.batch}, "
        f"fp32 on {device}, {torch.get_num_threads()} threads, median of {args.steps}"
    )
    for name, value in median.items():
        print(f"  {name:7s} {value:.3f} s/step")
    print(f"ratio mmclip / clip: {median['mmclip'] / median['clip']:.2f} (paper Table 7: 1.33)")
    if "maco" in median:
        print(f"ratio mmclip / maco: {median['mmclip'] / median['maco']:.2f}")


def maco_main(args: argparse.Namespace) -> None:
    """MaCo step: cxrkit Trainer vs hand-written MaCo vs cxrkit MAE on the same encoder."""
    size, decoder = (
        args.size,
        {
            "decoder_dim": args.decoder_dim,
            "decoder_depth": args.decoder_depth,
            "decoder_heads": 16,
        },
    )
    model = {"arch": "vit_tiny_patch16_224", "image_size": size, "patch_size": 16}
    maco_cfg = {
        "model": model,
        "target_size": 2 * size,
        "embed_dim": 64,
        "text": {"context_length": 64},
        **decoder,
    }
    mae_cfg = {"model": model, "mask_ratio": 0.5, "norm_pix_loss": False, **decoder}
    torch.manual_seed(0)
    big = torch.randn(args.batch, 1, 2 * size, 2 * size)
    small = nn.functional.interpolate(big, size=(size, size), mode="bicubic", antialias=True)
    texts = [f"Report {i}: the lungs are clear, no effusion." for i in range(args.batch)]
    maco = build_objective("maco", maco_cfg)
    tokens = maco.tokenize(texts)
    batch = {"image": big, "image_id": [str(i) for i in range(args.batch)], "tokens": tokens}
    optim = OptimConfig(lr=1e-4, grad_clip=1.0)
    train = TrainConfig(max_steps=1000, precision="fp32")
    trainer = Trainer(maco, optim, train)
    mae_trainer = Trainer(build_objective("mae", mae_cfg), optim, train)
    mae_batch = {"image": small, "image_id": batch["image_id"]}
    plain_model = build_objective("maco", maco_cfg)
    plain_opt = torch.optim.AdamW(plain_model.param_groups(0.05), lr=1e-4, betas=(0.9, 0.95))

    def plain_step() -> None:
        plain_model.loss(batch)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(plain_model.parameters(), 1.0)
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)

    hand = HandMaCo(size, 16, args.decoder_dim, args.decoder_depth)
    hand_opt = torch.optim.AdamW(hand.parameters(), lr=1e-4, betas=(0.9, 0.95))

    def hand_step() -> None:
        images = nn.functional.interpolate(big, size=(size, size), mode="bicubic", antialias=True)
        hand(images, big, tokens["input_ids"], tokens["attention_mask"]).backward()
        torch.nn.utils.clip_grad_norm_(hand.parameters(), 1.0)
        hand_opt.step()
        hand_opt.zero_grad(set_to_none=True)

    median = _interleaved(
        {
            "cxrkit": lambda: trainer.train_step([batch]),
            "plain": plain_step,
            "hand": hand_step,
            "mae": lambda: mae_trainer.train_step([mae_batch]),
        },
        args.steps,
    )
    print(
        f"MaCo vit_tiny {size}px (target {2 * size}px), MiniLM text tower, batch {args.batch}, "
        f"decoder {args.decoder_depth}x{args.decoder_dim}, fp32, "
        f"{torch.get_num_threads()} threads, median of {args.steps}"
    )
    for name, value in median.items():
        print(f"  {name:7s} {value:.3f} s/step")
    print(f"ratio cxrkit MaCo / plain loop:  {median['cxrkit'] / median['plain']:.3f}")
    print(f"ratio cxrkit MaCo / hand MaCo: {median['cxrkit'] / median['hand']:.3f}")
    print(
        f"ratio cxrkit MaCo / cxrkit MAE (same encoder, 50 %): {median['cxrkit'] / median['mae']:.3f}"
    )


# ------------------------------------------------------------------ M3AE (--method m3ae)
class HandCoAttention(nn.Module):
    """Post-norm self-attention, cross-attention, MLP with torch's nn.MultiheadAttention."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(3)])

    def forward(self, x, other, pad_self, pad_other):
        x = self.norms[0](x + self.attn(x, x, x, key_padding_mask=pad_self, need_weights=False)[0])
        cross = self.cross(x, other, other, key_padding_mask=pad_other, need_weights=False)[0]
        x = self.norms[1](x + cross)
        return self.norms[2](x + self.mlp(x))


class HandM3AE(nn.Module):
    """M3AE in plain PyTorch with cxrkit's shapes: the same timm ViT and text tower,
    co-attention layers, a timm-block MIM decoder, MLM and ITM heads; three passes."""

    def __init__(self, vit, text, vocab, dim, layers, heads, mim_layer, dec_dim, dec_depth, patch):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.vit, self.text, self.patch, self.mim_layer = vit, text, patch, mim_layer
        self.img_proj = nn.Linear(vit.embed_dim, dim)
        self.txt_proj = nn.Linear(text.config.hidden_size, dim)
        self.types = nn.Parameter(torch.zeros(2, dim))
        self.img_layers = nn.ModuleList([HandCoAttention(dim, heads) for _ in range(layers)])
        self.txt_layers = nn.ModuleList([HandCoAttention(dim, heads) for _ in range(layers)])
        self.poolers = nn.ModuleList([nn.Linear(dim, dim) for _ in range(2)])
        self.mlm = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.mlm_out = nn.Linear(dim, vocab)
        self.itm = nn.Linear(2 * dim, 2)
        length = vit.patch_embed.num_patches
        self.dec_embed = nn.Linear(dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.dec_pos = nn.Parameter(torch.zeros(1, length, dec_dim))
        self.dec = nn.Sequential(*[Block(dec_dim, 4, qkv_bias=True) for _ in range(dec_depth)])
        self.dec_norm = nn.LayerNorm(dec_dim)
        self.dec_out = nn.Linear(dec_dim, patch * patch)

    def image(self, images, keep_ids=None):
        v = self.vit
        x = v.patch_embed(images) + v.pos_embed[:, 1:]
        if keep_ids is not None:
            x = torch.gather(x, 1, keep_ids[..., None].expand(-1, -1, x.shape[-1]))
        cls = (v.cls_token + v.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = v.norm(v.blocks(torch.cat([cls, x], 1)))
        return self.img_proj(x) + self.types[1]

    def words(self, ids, mask):
        out = self.text(input_ids=ids, attention_mask=mask).last_hidden_state
        return self.txt_proj(out) + self.types[0]

    def fuse(self, img, txt, pad, layers=None):
        for i in range(layers or len(self.img_layers)):
            txt, img = (
                self.txt_layers[i](txt, img, pad, None),
                self.img_layers[i](img, txt, None, pad),
            )
        return img, txt

    def forward(self, batch):
        images, ids = batch["image"], batch["tokens"]["input_ids"]
        mask = batch["tokens"]["attention_mask"]
        pad = mask == 0
        full_img, full_txt = self.image(images), self.words(ids, mask)
        labels = batch["mlm"]["labels"]
        _, txt = self.fuse(full_img, self.words(batch["mlm"]["input_ids"], mask), pad)
        chosen = labels != -100
        mlm = nn.functional.cross_entropy(self.mlm_out(self.mlm(txt[chosen])), labels[chosen])
        count, length = images.shape[0], self.dec_pos.shape[1]
        keep = length // 4
        order = torch.rand(count, length).argsort(1)
        restore = order.argsort(1)
        img, _ = self.fuse(self.image(images, order[:, :keep]), full_txt, pad, self.mim_layer)
        y = self.dec_embed(img)
        fill = self.mask_token.expand(count, length - keep, -1)
        tokens = torch.gather(
            torch.cat([y[:, 1:], fill], 1), 1, restore[..., None].expand(-1, -1, y.shape[-1])
        )
        pred = self.dec_out(
            self.dec_norm(self.dec(torch.cat([y[:, :1], tokens + self.dec_pos], 1)))
        )[:, 1:]
        target = nn.functional.unfold(images, self.patch, stride=self.patch).transpose(1, 2)
        target = (target - target.mean(-1, keepdim=True)) / (
            target.var(-1, keepdim=True) + 1e-6
        ).sqrt()
        hidden = torch.ones(count, length)
        hidden[:, :keep] = 0
        hidden = torch.gather(hidden, 1, restore)
        mim = ((((pred - target) ** 2).mean(-1)) * hidden).sum() / hidden.sum()
        labels_itm = torch.ones(count, dtype=torch.long)
        labels_itm[torch.randperm(count)[: count // 2]] = 0
        index = torch.where(labels_itm == 1, torch.arange(count), (torch.arange(count) + 1) % count)
        img, txt = self.fuse(full_img[index], full_txt, pad)
        pooled = torch.cat(
            [torch.tanh(self.poolers[0](txt[:, 0])), torch.tanh(self.poolers[1](img[:, 0]))], -1
        )
        itm = nn.functional.cross_entropy(self.itm(pooled), labels_itm)
        return mlm + mim + itm


def m3ae_benchmark(args) -> None:
    """cxrkit's Trainer step on M3AE vs :class:`HandM3AE` (same towers and shapes)."""
    import copy
    import itertools

    from cxrkit.io.fields import collate_value
    from cxrkit.io.reports import iter_iu_reports

    config = {
        "model": {"arch": "vit_tiny_patch16_224", "image_size": args.size, "patch_size": 16, "depth": 4},
        "text": {"kind": "hf", "context_length": 64},
        "fusion_dim": 192, "fusion_layers": 2, "fusion_heads": 4, "fusion_dropout": 0.0,
        "mim_layer": 1, "decoder_dim": 128, "decoder_depth": 2, "decoder_heads": 4,
    }  # fmt: skip
    torch.manual_seed(0)
    objective = build_objective("m3ae", config)
    transform = objective.sample_transform()  # tokenising is loader work: not timed
    texts = [r.text for r in itertools.islice(iter_iu_reports(), 64) if r.findings][: args.batch]
    samples = [transform({"text": t, "seed": i}) for i, t in enumerate(texts)]
    batch = {k: collate_value(k, [s[k] for s in samples]) for k in samples[0]}
    batch["image"] = torch.randn(args.batch, 1, args.size, args.size)
    hand = HandM3AE(
        copy.deepcopy(objective.encoder), copy.deepcopy(objective.text.model),
        objective.mlm_head.decoder.out_features, 192, 2, 4, 1, 128, 2, 16,
    )  # fmt: skip
    for module in hand.modules():  # as cxrkit's fusion (no dropout in either)
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    trainer = Trainer(
        objective,
        OptimConfig(lr=1e-5, betas=[0.9, 0.98], weight_decay=0.01, grad_clip=1.0),
        TrainConfig(max_steps=1000, precision="fp32"),
    )
    hand_opt = torch.optim.AdamW(hand.parameters(), lr=1e-5, betas=(0.9, 0.98))

    def hand_step() -> None:
        hand(batch).backward()
        torch.nn.utils.clip_grad_norm_(hand.parameters(), 1.0)
        hand_opt.step()
        hand_opt.zero_grad(set_to_none=True)

    steps = {"cxrkit": lambda: trainer.train_step([batch]), "hand": hand_step}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(args.steps + 2):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_index >= 2:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"M3AE vit_tiny(4) {args.size}px + MiniLM (64 tokens), 2+2 fusion layers of 192, "
        f"batch {args.batch}, fp32, {torch.get_num_threads()} threads, median of {args.steps}"
    )
    for name, value in median.items():
        print(f"  {name:7s} {value:.3f} s/step")
    print(f"ratio cxrkit / hand M3AE: {median['cxrkit'] / median['hand']:.3f} (target <= 1.1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("mae", "maco", "mmclip", "m3ae"), default="mae")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--decoder-dim", type=int, default=256)
    parser.add_argument("--decoder-depth", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="mmclip: the full clip-vitb16 towers")
    parser.add_argument("--device", default="cpu", help="mmclip: cpu or cuda")
    args = parser.parse_args()
    if args.method == "maco":
        maco_main(args)
        return
    if args.method == "m3ae":
        m3ae_benchmark(args)
        return
    if args.method == "mmclip":
        mmclip_vs_clip(args)
        return
    mae_cfg = {
        "model": {"arch": "vit_tiny_patch16_224", "image_size": args.size, "patch_size": 16},
        "mask_ratio": 0.75,
        "norm_pix_loss": False,
        "decoder_dim": args.decoder_dim,
        "decoder_depth": args.decoder_depth,
        "decoder_heads": 16,
    }
    torch.manual_seed(0)
    images = torch.randn(args.batch, 1, args.size, args.size)
    batch = {"image": images, "image_id": [str(i) for i in range(args.batch)]}

    trainer = Trainer(
        build_objective("mae", mae_cfg),
        OptimConfig(lr=1e-4, grad_clip=1.0),
        TrainConfig(max_steps=1000, precision="fp32"),
    )

    plain_model = build_objective("mae", mae_cfg)
    plain_opt = torch.optim.AdamW(plain_model.param_groups(0.05), lr=1e-4, betas=(0.9, 0.95))

    def plain_step() -> None:
        loss = plain_model.loss(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain_model.parameters(), 1.0)
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)

    hand = HandMAE(args.size, 16, args.decoder_dim, args.decoder_depth)
    hand_opt = torch.optim.AdamW(hand.parameters(), lr=1e-4, betas=(0.9, 0.95))

    def hand_step() -> None:
        hand(images).backward()
        torch.nn.utils.clip_grad_norm_(hand.parameters(), 1.0)
        hand_opt.step()
        hand_opt.zero_grad(set_to_none=True)

    steps = {"cxrkit": lambda: trainer.train_step([batch]), "plain": plain_step, "hand": hand_step}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(args.steps + 2):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_index >= 2:  # first rounds warm up allocators and caches
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"MAE vit_tiny {args.size}px, batch {args.batch}, decoder {args.decoder_depth}x"
        f"{args.decoder_dim}, fp32, {torch.get_num_threads()} threads, median of {args.steps}"
    )
    for name, value in median.items():
        print(f"  {name:7s} {value:.3f} s/step")
    print(f"ratio cxrkit / plain loop: {median['cxrkit'] / median['plain']:.3f}")
    print(f"ratio cxrkit / hand MAE:   {median['cxrkit'] / median['hand']:.3f}")


if __name__ == "__main__":
    main()
