"""The PyTorch peer of the full zoom-in train step at paper shapes: Zoom-in-Net as a PyTorch port on timm would
write it, one JSON line like `bench/train_step.py --json` (needs the bench extra: torch, timm).

    python bench/peer_zoomin.py --batch=2 --steps=5

The same computation as our joint stage (every sub-network trained): uint8 1230 px images -> antialiased bilinear
resize to 492 -> M-Net (timm `inception_resnet_v2`, its 14x14x1536 final map = our `conv_7b_ac`) -> A-Net (score
1x1, attention 3x3 256 + ReLU + 1x1, spatial softmax, gated map) -> the top 4 cells of the gated map of levels 1-4
-> 294 px crops of the 1230 px image centred on the cells -> C-Net (a second timm network) -> max over patches,
concatenated with M-Net's pooled feature -> fusion head; loss = fused + 0.3 x (M-Net, A-Net, per-patch) cross-
entropies; backward; AdamW. Channels-last, float32 (`--bf16`: bf16 autocast), on the GPU when there is one, else
the CPU with the threads PyTorch chooses. Region suppression is left out (it
is a few comparisons on a 14x14 map; our step has it).
"""

import json
import resource
import statistics
import time

from absl import app, flags

flags.DEFINE_integer("batch", 2, "Images per step.")
flags.DEFINE_integer("steps", 5, "Timed steps after the warm-up one.")
flags.DEFINE_string("device", "auto", "auto (cuda when there is one) | cpu | cuda.")
flags.DEFINE_bool("bf16", False, "bf16 autocast (as our configs/full.py computes in bf16); the accelerator check.")
FLAGS = flags.FLAGS
HIGH, LOW, PATCH, N, K = 1230, 492, 294, 4, 5


def main(argv):
    del argv
    import timm
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    torch.manual_seed(0)

    class ZoomIn(nn.Module):
        def __init__(self):
            super().__init__()
            self.mnet = timm.create_model("inception_resnet_v2", pretrained=False, num_classes=K)
            self.cnet = timm.create_model("inception_resnet_v2", pretrained=False, num_classes=0)
            self.score = nn.Conv2d(1536, K, 1)
            self.att = nn.Sequential(nn.Conv2d(1536, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, K, 1))
            self.patch_head, self.fusion = nn.Linear(1536, K), nn.Linear(2 * 1536, K)

        def forward(self, images):
            x = images.float() / 127.5 - 1.0
            b = x.shape[0]
            low = F.interpolate(x, size=(LOW, LOW), mode="bilinear", antialias=True, align_corners=False)
            fmap = self.mnet.forward_features(low.contiguous(memory_format=torch.channels_last))
            f_m = fmap.mean((2, 3))
            mnet_logits = self.mnet.forward_head(fmap)
            a = torch.softmax(self.att(fmap).flatten(2), -1).view(b, K, *fmap.shape[2:])
            g = self.score(fmap) * a
            anet_logits = g.sum((2, 3))
            h, w = fmap.shape[2:]
            cells = g[:, 1:].amax(1).flatten(1).topk(N, dim=1).indices.detach()  # (B, N)
            cy = ((cells // w).float() * 32 + 37.5) * HIGH / LOW  # receptive-field centres, as our cell_centres
            cx = ((cells % w).float() * 32 + 37.5) * HIGH / LOW
            y0 = (cy - PATCH / 2).round().long().clamp(0, HIGH - PATCH)
            x0 = (cx - PATCH / 2).round().long().clamp(0, HIGH - PATCH)
            patches = torch.stack([x[i, :, y0[i, n]:y0[i, n] + PATCH, x0[i, n]:x0[i, n] + PATCH]
                                   for i in range(b) for n in range(N)])
            per_patch = self.cnet(patches.contiguous(memory_format=torch.channels_last)).view(b, N, -1)
            logits = self.fusion(torch.cat([f_m, per_patch.amax(1)], -1))
            return logits, mnet_logits, anet_logits, self.patch_head(per_patch)

    device = FLAGS.device if FLAGS.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    model = ZoomIn().to(device=device, memory_format=torch.channels_last).train()
    t_init = time.perf_counter() - t0
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (FLAGS.batch, 3, HIGH, HIGH), generator=gen, dtype=torch.uint8).to(device)
    labels = torch.randint(0, K, (FLAGS.batch,), generator=gen).to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=FLAGS.bf16):
            logits, m, a, p = model(images)
            ce = F.cross_entropy
            loss = ce(logits, labels) + 0.3 * (ce(m, labels) + ce(a, labels)
                                               + ce(p.flatten(0, 1), labels.repeat_interleave(N)))
        loss.backward()
        opt.step()
        sync()

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    times = []
    for _ in range(FLAGS.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(json.dumps({"framework": "torch", "init_s": t_init, "first_s": first, "times": times, "median_s": median,
                      "images_per_s": FLAGS.batch / median, "batch": FLAGS.batch,
                      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                      "torch": torch.__version__, "timm": timm.__version__, "threads": torch.get_num_threads(),
                      "device": device, "bf16": FLAGS.bf16,
                      "peak_device_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}))


if __name__ == "__main__":
    app.run(main)
