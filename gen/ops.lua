-- gen/ops.lua: the row-wise ViT ops of runtime/kernels.h described once in the IR of
-- gen/ir.lua; gen/lower_c.lua and gen/lower_cuda.lua make the C and CUDA kernels of each.
-- Attention is not row-wise: it is hand-written in templates/attention_*.
-- Compile-time constants: WIDTH (D), HIDDEN (F), HEADS (H), HEAD_DIM (Dh).
local ir = require("gen.ir")
local V, L, call, select, cmp, both, present =
  ir.var, ir.load, ir.call, ir.select, ir.cmp, ir.both, ir.present

local ops = {}

local EPS = 1e-6                      -- LayerNorm eps of the ViT (reference §1.2)
local SQRT1_2 = 0.70710678118654752440
local INV_SQRT_2PI = 0.39894228040143267794

-- LayerNorm over the WIDTH channels of row x: the stages that store mean, rstd and
-- y = (x - mean) * rstd * w + b, the rstd bound to the name rstd_name (free in the op).
local function layernorm_stages(w, b, rstd_name)
  return {
    ir.reduce("sum", L("x")),
    ir.let("mu", V("sum") / V("WIDTH")),
    ir.reduce("squares", (L("x") - V("mu")) * (L("x") - V("mu"))),
    ir.let(rstd_name, 1 / call("sqrt", V("squares") / V("WIDTH") + EPS)),
    ir.store("mean", V("mu")),
    ir.store("rstd", V(rstd_name)),
    ir.map("y", (L("x") - V("mu")) * V(rstd_name) * L(w) + L(b)),
  }
end

-- Its backward's row part: dx = (or +=, accumulate) rstd * (g - mean(g) - xhat * mean(g * xhat)),
-- g = dy * w, xhat = (x - mean) * rstd.
local function layernorm_backward_stages(accumulate)
  local xhat = (L("x") - L("mean")) * L("rstd")
  local g = L("dy") * L("w")
  return {
    ir.reduce("g_sum", g),
    ir.reduce("gx_sum", g * xhat),
    ir.let("g_mean", V("g_sum") / V("WIDTH")),
    ir.let("gx_mean", V("gx_sum") / V("WIDTH")),
    ir.map("dx", L("rstd") * (g - V("g_mean") - xhat * V("gx_mean")), accumulate and { accumulate = true } or nil),
  }
end

-- The stages of a, then of b.
local function concat(a, b)
  local out = {}
  for _, s in ipairs(a) do out[#out + 1] = s end
  for _, s in ipairs(b) do out[#out + 1] = s end
  return out
end

-- LayerNorm over the WIDTH channels of each row.
ops.layernorm_forward = ir.op({
  name = "layernorm_forward",
  math = {
    "mean = sum(x) / D, var = sum((x - mean)^2) / D (biased), rstd = 1 / sqrt(var + 1e-6)",
    "y = (x - mean) * rstd * w + b; mean and rstd saved per row",
  },
  params = { { "y", "out" }, { "mean", "out" }, { "rstd", "out" }, { "x", "in" }, { "w", "in" },
             { "b", "in" }, { "rows", "long" } },
  tensors = { y = ir.rows("WIDTH"), x = ir.rows("WIDTH"), mean = ir.per_row(),
              rstd = ir.per_row(), w = ir.vector(), b = ir.vector() },
  length = "WIDTH",
  stages = layernorm_stages("w", "b", "s"),
})

do
  local xhat = (L("x") - L("mean")) * L("rstd")
  ops.layernorm_backward = ir.op({
    name = "layernorm_backward",
    math = {
      "xhat = (x - mean) * rstd, g = dy * w",
      "dx = rstd * (g - mean(g) - xhat * mean(g * xhat))   (written)",
      "dw += sum over rows of dy * xhat, db += sum over rows of dy",
    },
    params = { { "dx", "out" }, { "dw", "out" }, { "db", "out" }, { "dy", "in" }, { "x", "in" },
               { "mean", "in" }, { "rstd", "in" }, { "w", "in" }, { "rows", "long" } },
    tensors = { dx = ir.rows("WIDTH"), dy = ir.rows("WIDTH"), x = ir.rows("WIDTH"),
                mean = ir.per_row(), rstd = ir.per_row(), w = ir.vector(), dw = ir.vector(),
                db = ir.vector() },
    length = "WIDTH",
    stages = concat(layernorm_backward_stages(false), {
      ir.colsum({ over = { { "r", "rows" } },
                  outputs = { { "dw", L("dy") * xhat }, { "db", L("dy") } } }),
    }),
  })
end

-- GELU, exact erf form, elementwise over rows of HIDDEN.
do
  local u = L("u")
  local cdf = 0.5 * (1 + call("erf", u * SQRT1_2))
  ops.gelu_forward = ir.op({
    name = "gelu_forward",
    math = { "g = gelu(u) = u * Phi(u) = 0.5 u (1 + erf(u / sqrt 2))" },
    params = { { "g", "out" }, { "u", "in" }, { "rows", "long" } },
    tensors = { g = ir.rows("HIDDEN"), u = ir.rows("HIDDEN") },
    length = "HIDDEN",
    stages = { ir.map("g", u * cdf) },
  })
  ops.gelu_backward = ir.op({
    name = "gelu_backward",
    math = { "du = dg * gelu'(u), gelu'(u) = Phi(u) + u phi(u), phi(u) = exp(-u^2 / 2) / sqrt(2 pi)" },
    params = { { "du", "out" }, { "dg", "in" }, { "u", "in" }, { "rows", "long" } },
    tensors = { du = ir.rows("HIDDEN"), dg = ir.rows("HIDDEN"), u = ir.rows("HIDDEN") },
    length = "HIDDEN",
    stages = {
      ir.map("du", L("dg") * (cdf + u * (call("exp", -0.5 * u * u) * INV_SQRT_2PI))),
    },
  })
end

-- Residual add with LayerScale gamma and a per-sample stochastic-depth scale s[b].
do
  local sample = { { "b", "batch" }, { "t", "tokens" } }
  local s = select(present("sample_scale"), L("sample_scale", V("b")), 1.0)
  local tensors = { x = ir.rows("WIDTH"), h = ir.rows("WIDTH"), dx = ir.rows("WIDTH"),
                    dh = ir.rows("WIDTH"), gamma = ir.vector(), dgamma = ir.vector(),
                    sample_scale = ir.per_row() }
  ops.residual_forward = ir.op({
    name = "residual_forward",
    math = { "x[b,t,:] += s[b] * gamma * h[b,t,:], s = sample_scale or 1 when NULL" },
    params = { { "x", "out" }, { "h", "in" }, { "gamma", "in" }, { "sample_scale", "in" },
               { "batch", "long" }, { "tokens", "long" } },
    tensors = tensors, optional = { "sample_scale" },
    length = "WIDTH", loops = sample, row = V("b") * V("tokens") + V("t"),
    stages = {
      ir.let("s", s),
      ir.map("x", V("s") * L("gamma") * L("h"), { accumulate = true }),
    },
  })
  ops.residual_backward = ir.op({
    name = "residual_backward",
    math = { "dh = s[b] * gamma * dx (written); dgamma += sum over b, t of s[b] * h * dx" },
    params = { { "dh", "out" }, { "dgamma", "out" }, { "dx", "in" }, { "h", "in" },
               { "gamma", "in" }, { "sample_scale", "in" }, { "batch", "long" },
               { "tokens", "long" } },
    tensors = tensors, optional = { "sample_scale" },
    length = "WIDTH", loops = sample, row = V("b") * V("tokens") + V("t"),
    stages = {
      ir.let("s", s),
      ir.map("dh", V("s") * L("gamma") * L("dx")),
      ir.colsum({ over = { { "b", "batch" }, { "t", "tokens" } }, lets = { { "s", s } },
                  outputs = { { "dgamma", V("s") * L("h") * L("dx") } } }),
    },
  })
end

-- Token assembly: CLS, patch (or mask token) plus the position embedding, T = 1 + N tokens.
do
  local b, t, n, N, T = V("b"), V("t"), V("n"), V("patches"), V("T")
  local masked = both(cmp(">", t, 0), both(present("mask"), L("mask", b * N + t - 1)))
  local tensors = { x = ir.rows("WIDTH"), dx = ir.rows("WIDTH"), patch = ir.rows("WIDTH"),
                    dpatch = ir.rows("WIDTH"), cls = ir.vector(), dcls = ir.vector(),
                    mask_token = ir.vector(), dmask_token = ir.vector(),
                    pos = ir.rows("pos_ld"), dpos = ir.rows("pos_ld"), mask = ir.per_row() }
  ops.tokens_forward = ir.op({
    name = "tokens_forward",
    math = {
      "x[b,0,:] = cls + pos[0]",
      "x[b,1+n,:] = (mask && mask[b*N+n] ? mask_token : patch[b*N+n]) + pos[1+n]",
    },
    params = { { "x", "out" }, { "patch", "in" }, { "cls", "in" }, { "mask_token", "in" },
               { "pos", "in" }, { "pos_ld", "long" }, { "mask", "mask" }, { "batch", "long" },
               { "patches", "long" } },
    tensors = tensors, optional = { "mask", "mask_token" },
    length = "WIDTH", prelude = { { "T", N + 1 } },
    loops = { { "b", "batch" }, { "t", "T" } }, row = b * T + t,
    stages = {
      ir.let("masked", masked, "int"),
      ir.map("x", select(cmp("==", t, 0), L("cls"),
                         select(V("masked"), L("mask_token"), L("patch", b * N + t - 1)))
                  + L("pos", t)),
    },
  })
  ops.tokens_backward = ir.op({
    name = "tokens_backward",
    math = {
      "dpatch[b*N+n] = masked ? 0 : dx[b,1+n] (written)",
      "dcls += sum_b dx[b,0]; dpos[t] += sum_b dx[b,t]; dmask_token += sum of dx over masked tokens",
    },
    params = { { "dpatch", "out" }, { "dcls", "out" }, { "dmask_token", "out" }, { "dpos", "out" },
               { "pos_ld", "long" }, { "dx", "in" }, { "mask", "mask" }, { "batch", "long" },
               { "patches", "long" } },
    tensors = tensors, optional = { "mask" },
    length = "WIDTH", prelude = { { "T", N + 1 } },
    loops = { { "b", "batch" }, { "t", "T" } }, row = b * T + t,
    stages = {
      ir.let("masked", masked, "int"),
      ir.map("dpatch", select(V("masked"), 0.0, L("dx")),
             { row = b * N + t - 1, where = cmp(">", t, 0) }),
      ir.colsum({ over = { { "b", "batch" } }, outputs = { { "dcls", L("dx", b * T) } } }),
      ir.colsum({ keep = { { "t", "T" } }, over = { { "b", "batch" } },
                  outputs = { { "dpos", L("dx", b * T + t), row = t } } }),
      ir.colsum({ when = present("mask"), over = { { "b", "batch" }, { "n", "patches" } },
                  lets = { { "m", L("mask", b * N + n), "int" } }, where = V("m"),
                  outputs = { { "dmask_token", L("dx", b * T + 1 + n) } } }),
    },
  })
end

-- Residual with LayerScale and drop-path fused with the LayerNorm that follows it (pre-norm
-- blocks: the residual add of one branch and the norm of the next in one pass). The same
-- expressions as residual_* and layernorm_*, so the fused kernels give the same bits as the two
-- unfused ones in sequence. In the C kernel sets these are extern functions named
-- poa_vit_<op>_<set> (declared in build/gen/vit_fused.h); in CUDA kernels of the op's name.
do
  local sample = { { "b", "batch" }, { "t", "tokens" } }
  local s = select(present("sample_scale"), L("sample_scale", V("b")), 1.0)
  local tensors = { x = ir.rows("WIDTH"), h = ir.rows("WIDTH"), y = ir.rows("WIDTH"), dy = ir.rows("WIDTH"),
                    dx = ir.rows("WIDTH"), dh = ir.rows("WIDTH"), gamma = ir.vector(), dgamma = ir.vector(),
                    w = ir.vector(), bias = ir.vector(), dw = ir.vector(), db = ir.vector(),
                    mean = ir.per_row(), rstd = ir.per_row(), sample_scale = ir.per_row() }
  ops.residual_layernorm_forward = ir.op({
    name = "residual_layernorm_forward",
    math = {
      "x[b,t,:] += s[b] * gamma * h[b,t,:] (s = sample_scale or 1 when NULL), then",
      "y = LayerNorm(x) with weight w and bias, eps 1e-6; mean and rstd saved per row",
    },
    params = { { "x", "out" }, { "y", "out" }, { "mean", "out" }, { "rstd", "out" }, { "h", "in" },
               { "gamma", "in" }, { "sample_scale", "in" }, { "w", "in" }, { "bias", "in" },
               { "batch", "long" }, { "tokens", "long" } },
    tensors = tensors, optional = { "sample_scale" },
    length = "WIDTH", loops = sample, row = V("b") * V("tokens") + V("t"),
    stages = concat({
      ir.let("s", s),
      ir.map("x", V("s") * L("gamma") * L("h"), { accumulate = true }),
    }, layernorm_stages("w", "bias", "rs")),
  })
  local xhat = (L("x") - L("mean")) * L("rstd")
  ops.residual_layernorm_backward = ir.op({
    name = "residual_layernorm_backward",
    math = {
      "the gradient of residual_layernorm_forward (x is its output, the updated stream):",
      "dx += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w, xhat = (x - mean) * rstd",
      "(dx holds the stream's gradient from above and becomes the gradient of x before the add)",
      "dh = s[b] * gamma * dx (written); dw += sum dy * xhat, db += sum dy,",
      "dgamma += sum s[b] * h * dx over b, t",
    },
    params = { { "dx", "out" }, { "dh", "out" }, { "dw", "out" }, { "db", "out" }, { "dgamma", "out" },
               { "dy", "in" }, { "x", "in" }, { "mean", "in" }, { "rstd", "in" }, { "w", "in" },
               { "h", "in" }, { "gamma", "in" }, { "sample_scale", "in" }, { "batch", "long" },
               { "tokens", "long" } },
    tensors = tensors, optional = { "sample_scale" },
    length = "WIDTH", loops = sample, row = V("b") * V("tokens") + V("t"),
    stages = concat(layernorm_backward_stages(true), {
      ir.let("s", s),
      ir.map("dh", V("s") * L("gamma") * L("dx")),
      ir.colsum({ over = { { "b", "batch" }, { "t", "tokens" } },
                  outputs = { { "dw", L("dy") * xhat }, { "db", L("dy") } } }),
      ir.colsum({ over = { { "b", "batch" }, { "t", "tokens" } }, lets = { { "s", s } },
                  outputs = { { "dgamma", V("s") * L("h") * L("dx") } } }),
    }),
  })
end

-- The fused ops, emitted beside the kernel set (not in poa_vit_kernels).
ops.fused_order = { "residual_layernorm_forward", "residual_layernorm_backward" }

-- The row-wise ops in the order of the kernel set (attention is templated separately).
ops.order = { "layernorm_forward", "layernorm_backward", "gelu_forward", "gelu_backward",
              "residual_forward", "residual_backward", "tokens_forward", "tokens_backward" }

return ops
