"""FLOPs of the POA tri-branch step, counted analytically, and the peak bf16 FLOP/s of a GPU,
for model FLOP utilisation (MFU = achieved FLOP/s / peak).

Convention, as gen/space.lua (whose GFLOPs `poa list` prints): the multiply-accumulates of the
patch-embed convolution (at the member's width), the qkv / proj / fc1 / fc2 GEMMs and the two
attention matmuls (q k^T, attn v); bias adds, norms, softmax, GELU and other elementwise work
are left out. Here 1 MAC = 2 FLOPs. One step is:
  teacher: forward of the intact backbone on the G*B global crops and of the teacher heads on
    [G*B CLS; masked patch tokens];
  each student (intact, then the elastic member): 3 x forward (forward + backward) of the
    backbone on the global and the local crops, and of the heads on
    [L*B local CLS; G*B global CLS; masked patch tokens].
The heads count Linear(d, hidden), Linear(hidden, hidden), Linear(hidden, bottleneck) and the
last Linear(bottleneck, K) of every head (the first at the member's width d).
With drop path (rate r), the students' residual branches run on max(int(rows (1 - r)), 1) rows
of every crop batch only, as the reference computes them (drop_add_residual_stochastic_depth);
step_flops gives that count and, for comparison, the count with every row.
"""

# Dense bf16 tensor-core peaks from the vendors' data sheets (no sparsity), by device name.
PEAK_BF16 = [
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),  # SXM
    ("H200", 989.4e12),
    ("A100", 312e12),
]


def peak_flops(device_name):
    """(peak FLOP/s, the entry matched) for a device name, or (None, None)."""
    for key, peak in PEAK_BF16:
        if key in device_name:
            return peak, key
    return None, None


def vit_macs(cfg, d, depth, px, rows, rate=0.0):
    """Forward MACs of `rows` crops of px x px through member (d, depth)."""
    patch, ratio = int(cfg["patch"]), int(cfg["mlp_ratio"])
    patches = (px // patch) ** 2
    n, hidden = patches + 1, ratio * d
    embed = patches * d * 3 * patch * patch
    attention = n * d * 3 * d + 2 * n * n * d + n * d * d
    mlp = 2 * n * d * hidden
    keep = rows if rate <= 0 else max(int(rows * (1 - rate)), 1)
    return rows * embed + depth * keep * (attention + mlp)


def head_macs(cfg, d, rows):
    hidden, bottleneck = int(cfg["hidden"]), int(cfg["bottleneck"])
    protos = cfg["prototypes"] if isinstance(cfg["prototypes"], list) else [cfg["prototypes"]]
    return rows * sum(d * hidden + hidden * hidden + hidden * bottleneck + bottleneck * int(k) for k in protos)


def step_flops(cfg, member, drop_path=True):
    """FLOPs of one tri-branch step with elastic `member` (width, depth)."""
    G, S = (int(v) for v in cfg["global"])
    L, s = (int(v) for v in cfg["local"])
    B = int(cfg["batch"])
    dmax, lmax = int(cfg["width"][1]), int(cfg["depth"][1])
    masked = sum(cfg["masks"]) if int(cfg["ibot"]) else 0
    rate = float(cfg["drop_path"]) if drop_path else 0.0
    teacher = vit_macs(cfg, dmax, lmax, S, G * B) + head_macs(cfg, dmax, G * B + masked)

    def student(d, depth):
        return (vit_macs(cfg, d, depth, S, G * B, rate) + vit_macs(cfg, d, depth, s, L * B, rate)
                + head_macs(cfg, d, L * B + G * B + masked))

    return 2 * (teacher + 3 * (student(dmax, lmax) + student(*member)))


def parse_poa_list(text):
    """`poa list` rows -> {(width, depth): forward GFLOPs of one global crop}."""
    table = {}
    for line in text.splitlines():
        w = line.split()
        if len(w) >= 5 and w[0].isdigit() and w[1].isdigit():
            table[(int(w[0]), int(w[1]))] = float(w[4])
    return table
