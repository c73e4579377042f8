-- gen/ops_train.lua: the training-step ops (optimizer, EMA, clipping, losses, Sinkhorn-Knopp)
-- described once in the IR of gen/ir.lua; gen/lower_c.lua and gen/lower_cuda.lua make the C
-- functions (build/gen/train_kernels.c) and the CUDA kernels (build/gen/cuda/train_kernels.cu).
-- They do not depend on the width: one file per build. The hand-written references they are
-- tested against are runtime/optim.c and runtime/loss.c (tests/c/test_train_kernels.c).
--
-- Flat buffers (parameters, gradients, optimizer state) are cut into rows of TRAIN_CHUNK
-- elements (the last one shorter): on the GPU one block per chunk, in C a parallel loop over
-- chunks. AdamW is multi-tensor: a table of chunks, each inside one parameter tensor
-- (chunk_start, chunk_count, chunk_tensor), with per-tensor scalars (decay, neg_step), so one
-- launch updates every tensor of a buffer whatever its learning-rate and weight-decay
-- multipliers (poa_train_adamw_chunks and poa_train_adamw_scalars of
-- templates/train_host.c.tmpl build the table and the scalars).
--
-- Sums that loss.c and optim.c take in double are double here too (reduce type "double"),
-- with the same formulas, so the C lowering matches them up to the order of summation.
local ir = require("gen.ir")
local V, L, call, select, cmp, present = ir.var, ir.load, ir.call, ir.select, ir.cmp, ir.present
local D = ir.double

local ops = {}

ops.CHUNK = 4096 -- TRAIN_CHUNK

local function to_double(e) return call("to_double", e) end
local function to_real(e) return call("to_real", e) end
local function fma(a, b, c) return call("fma", a, b, c) end

-- The chunk row of a flat buffer of n elements: c = 0 .. ceil(n / TRAIN_CHUNK) - 1.
local flat_loops = { { "c", (V("n") + V("TRAIN_CHUNK") - 1) / V("TRAIN_CHUNK") } }
local flat_lets = {
  ir.let("start", V("c") * V("TRAIN_CHUNK"), "long"),
  ir.let("count", select(cmp("<", V("n") - V("start"), V("TRAIN_CHUNK")), V("n") - V("start"), V("TRAIN_CHUNK")), "long"),
}
local function flat_op(spec)
  spec.loops = { { flat_loops[1][1], flat_loops[1][2] } }
  spec.length = V("count")
  local stages = { flat_lets[1], flat_lets[2] }
  for _, s in ipairs(spec.stages) do stages[#stages + 1] = s end
  spec.stages = stages
  return ir.op(spec)
end

-- AdamW, torch semantics in the order of runtime/optim.c's adamw_range (the same operations:
-- the same bits in C and in CUDA, where `exact` keeps the products from fusing into fma).
do
  local span = ir.span("start")
  local g, m, v, p = L("g"), L("m"), L("v"), L("p")
  ops.adamw = ir.op({
    name = "poa_train_adamw",
    math = {
      "for each chunk c (elements chunk_start[c] .. + chunk_count[c] of tensor t = chunk_tensor[c]):",
      "m = fma(g, 1 - b1, m b1); v = fma((1 - b2) g, g, v b2)",
      "p = p decay[t] + neg_step[t] m / (sqrt(v) / sqrt(1 - b2^step) + eps); shadow = bf16(p)",
      "decay[t] = 1 - lr_t wd_t, neg_step[t] = -lr_t / (1 - b1^step) (poa_train_adamw_scalars)",
    },
    params = { { "p", "out" }, { "m", "out" }, { "v", "out" }, { "shadow", "out" }, { "g", "in" },
               { "chunk_start", "in" }, { "chunk_count", "in" }, { "chunk_tensor", "in" },
               { "decay", "in" }, { "neg_step", "in" }, { "beta1", "real" },
               { "one_minus_beta1", "real" }, { "beta2", "real" }, { "one_minus_beta2", "real" },
               { "correction2_sqrt", "real" }, { "epsilon", "real" }, { "chunks", "long" } },
    tensors = { p = span, m = span, v = span, g = span, shadow = ir.span("start", "bf16"),
                chunk_start = ir.per_row("long"), chunk_count = ir.per_row("long"),
                chunk_tensor = ir.per_row("long"), decay = ir.per_row(), neg_step = ir.per_row() },
    length = V("count"), loops = { { "c", "chunks" } }, exact = true,
    stages = {
      ir.let("start", L("chunk_start"), "long"),
      ir.let("count", L("chunk_count"), "long"),
      ir.let("t", L("chunk_tensor"), "long"),
      ir.let("decay_t", L("decay", V("t"))),
      ir.let("step_t", L("neg_step", V("t"))),
      ir.map("m", fma(g, V("one_minus_beta1"), m * V("beta1"))),
      ir.map("v", fma(V("one_minus_beta2") * g, g, v * V("beta2"))),
      ir.map("p", p * V("decay_t") + V("step_t") * m / (call("sqrt", v) / V("correction2_sqrt") + V("epsilon"))),
      ir.map("shadow", p),
    },
  })
end

-- EMA of the teacher: runtime/optim.c's ema_range, and the teacher's bf16 shadow.
ops.ema = flat_op({
  name = "poa_train_ema",
  math = { "teacher = fma(student, take, teacher keep) (keep = m, take = 1 - m, rounded to real); shadow = bf16(teacher)" },
  params = { { "teacher", "out" }, { "shadow", "out" }, { "student", "in" }, { "keep", "real" },
             { "take", "real" }, { "n", "long" } },
  tensors = { teacher = ir.span("start"), shadow = ir.span("start", "bf16"), student = ir.span("start") },
  exact = true,
  stages = {
    ir.map("teacher", fma(L("student"), V("take"), L("teacher") * V("keep"))),
    ir.map("shadow", L("teacher")),
  },
})

-- fp32 -> bf16 (activations that feed bf16 GEMMs).
ops.cast_bf16 = flat_op({
  name = "poa_train_cast_bf16",
  math = { "y = bf16(x), round to nearest even, NaN stays NaN" },
  params = { { "y", "out" }, { "x", "in" }, { "n", "long" } },
  tensors = { y = ir.span("start", "bf16"), x = ir.span("start") },
  stages = { ir.map("y", L("x")) },
})

-- Gradient clipping (runtime/optim.c's poa_clip_grad_norm) in three launches with no host
-- synchronisation: partial[c] = sum of squares of chunk c; total = sum of the partials (one
-- block, in a fixed order; add the partials of several buffers, or all-reduce, before it);
-- x *= max_norm / (sqrt(total) + 1e-6) when that is below 1.
ops.sum_squares = flat_op({
  name = "poa_train_sum_squares",
  math = { "partial[c] = sum over chunk c of (double) x^2, c < ceil(n / TRAIN_CHUNK)" },
  params = { { "partial", "out" }, { "x", "in" }, { "n", "long" } },
  tensors = { partial = ir.per_row("double"), x = ir.span("start") },
  stages = {
    ir.reduce("s", to_double(L("x")) * to_double(L("x")), { type = "double" }),
    ir.store("partial", V("s")),
  },
})

ops.sum = ir.op({
  name = "poa_train_sum",
  math = { "total[0] = sum of x[0 .. n-1] (double), one row: deterministic" },
  params = { { "total", "out" }, { "x", "in" }, { "n", "long" } },
  tensors = { total = ir.per_row("double"), x = ir.span(0, "double") },
  loops = { { "r", 1 } }, length = V("n"),
  stages = { ir.reduce("s", L("x"), { type = "double" }), ir.store("total", V("s")) },
})

ops.clip_scale = flat_op({
  name = "poa_train_clip_scale",
  math = { "norm = sqrt(total[0]), coef = max_norm / (norm + 1e-6); x *= (real)coef when coef < 1" },
  params = { { "x", "out" }, { "total", "in" }, { "max_norm", "double" }, { "n", "long" } },
  tensors = { x = ir.span("start"), total = ir.per_row("double") },
  stages = {
    ir.let("coef", V("max_norm") / (call("dsqrt", L("total", 0)) + D(1e-6)), "double"),
    ir.let("scale", to_real(V("coef"))),
    ir.map("x", L("x") * V("scale"), { where = cmp("<", V("coef"), D(1)) }),
  },
})

-- Maxima: of chunks of a flat buffer, then of the partials (the Sinkhorn-Knopp global max).
ops.max_partial = flat_op({
  name = "poa_train_max_partial",
  math = { "partial[c] = max over chunk c of x, c < ceil(n / TRAIN_CHUNK)" },
  params = { { "partial", "out" }, { "x", "in" }, { "n", "long" } },
  tensors = { partial = ir.per_row(), x = ir.span("start") },
  stages = { ir.reduce("mx", L("x"), { combine = "max" }), ir.store("partial", V("mx")) },
})

ops.max = ir.op({
  name = "poa_train_max",
  math = { "total[0] = max of x[0 .. n-1]" },
  params = { { "total", "out" }, { "x", "in" }, { "n", "long" } },
  tensors = { total = ir.per_row(), x = ir.span(0) },
  loops = { { "r", 1 } }, length = V("n"),
  stages = { ir.reduce("mx", L("x"), { combine = "max" }), ir.store("total", V("mx")) },
})

-- Softmax with temperature per row (runtime/loss.c's poa_softmax_rows).
ops.softmax = ir.op({
  name = "poa_train_softmax",
  math = { "targets = exp((l - max l) / T) / sum exp((l - max l) / T) per row of k; the sum in double" },
  params = { { "targets", "out" }, { "logits", "in" }, { "temperature", "double" }, { "rows", "long" },
             { "k", "long" } },
  tensors = { targets = ir.rows("k"), logits = ir.rows("k") },
  length = V("k"),
  stages = {
    ir.let("inv_t", D(1) / V("temperature"), "double"),
    ir.reduce("mx", L("logits"), { combine = "max" }),
    ir.map("targets", call("exp", to_real((to_double(L("logits")) - V("mx")) * V("inv_t")))),
    ir.reduce("s", L("targets"), { type = "double" }),
    ir.let("inv_s", D(1) / V("s"), "double"),
    ir.map("targets", to_real(L("targets") * V("inv_s"))),
  },
})

-- Soft cross-entropy with temperature and its gradient (runtime/loss.c's cross_entropy_row):
-- row_loss[r] = w_r CE_r; the total is poa_train_sum over row_loss.
do
  local s_j = to_double(L("logits")) * V("inv_t")
  ops.cross_entropy = ir.op({
    name = "poa_train_cross_entropy",
    math = {
      "s = l / T, lse = log sum_j exp(s_j), P = sum_j p_j: CE = P lse - sum_j p_j s_j",
      "w = scale * weight[r] (scale when weight is NULL); row_loss[r] = w CE (double)",
      "dlogits (if not NULL) += w (P softmax(s) - p) / T",
    },
    params = { { "row_loss", "out" }, { "dlogits", "out" }, { "targets", "in" }, { "logits", "in" },
               { "weight", "in" }, { "temperature", "double" }, { "scale", "double" },
               { "rows", "long" }, { "k", "long" } },
    tensors = { row_loss = ir.per_row("double"), dlogits = ir.rows("k"), targets = ir.rows("k"),
                logits = ir.rows("k"), weight = ir.per_row() },
    optional = { "dlogits", "weight" },
    length = V("k"),
    stages = {
      ir.let("inv_t", D(1) / V("temperature"), "double"),
      ir.reduce("mx", L("logits"), { combine = "max" }),
      ir.let("mt", to_double(V("mx")) * V("inv_t"), "double"),
      ir.reduce("s", call("exp", to_real(s_j - V("mt"))), { type = "double" }),
      ir.reduce("mass", L("targets"), { type = "double" }),
      ir.reduce("dot", to_double(L("targets")) * s_j, { type = "double" }),
      ir.let("lse", V("mt") + call("log", V("s")), "double"),
      ir.let("w", select(present("weight"), V("scale") * to_double(L("weight")), V("scale")), "double"),
      ir.store("row_loss", V("w") * (V("mass") * V("lse") - V("dot"))),
      ir.map("dlogits", to_real(V("w") * V("inv_t") * (V("mass") * to_double(call("exp", to_real(s_j - V("lse"))))
                                                      - to_double(L("targets")))),
             { accumulate = true, where = present("dlogits") }),
    },
  })
end

-- Sinkhorn-Knopp (runtime/loss.c's poa_sinkhorn_knopp) in pieces, in factored form
-- Q_ij = E_ij r_i c_j, so that several GPUs, each with rows of the global batch, can run it
-- with all-reduces between the pieces:
--   poa_train_max_partial + poa_train_max over the logits -> m      (all-reduce max)
--   poa_train_sinkhorn_exp: E = exp((l - m) / tau), row_sum
--   poa_train_sum over row_sum -> total                             (all-reduce sum)
--   poa_train_sinkhorn_fill: row_scale r = 1 / total
--   each iteration: poa_train_sinkhorn_columns -> colsum            (all-reduce sum)
--                   poa_train_sinkhorn_column_scale: c = 1 / (K colsum)
--                   poa_train_sinkhorn_rows: r = 1 / (n sum_j E c)  (n = the global batch)
--   poa_train_sinkhorn_finish: targets = E r c n   (0 iterations: the caller sets c = 1)
ops.sinkhorn_exp = ir.op({
  name = "poa_train_sinkhorn_exp",
  math = { "e = exp((l - global_max[0]) / tau) per row of k; row_sum[r] = sum of the row (double)" },
  params = { { "e", "out" }, { "row_sum", "out" }, { "logits", "in" }, { "global_max", "in" },
             { "tau", "double" }, { "rows", "long" }, { "k", "long" } },
  tensors = { e = ir.rows("k"), row_sum = ir.per_row("double"), logits = ir.rows("k"),
              global_max = ir.per_row() },
  length = V("k"),
  stages = {
    ir.let("inv_tau", D(1) / V("tau"), "double"),
    ir.let("m", L("global_max", 0)),
    ir.map("e", call("exp", to_real((to_double(L("logits")) - V("m")) * V("inv_tau")))),
    ir.reduce("s", L("e"), { type = "double" }),
    ir.store("row_sum", V("s")),
  },
})

ops.sinkhorn_fill = ir.op({
  name = "poa_train_sinkhorn_fill",
  math = { "row_scale[i] = 1 / total[0], i < rows" },
  params = { { "row_scale", "out" }, { "total", "in" }, { "rows", "long" } },
  tensors = { row_scale = ir.vector("double"), total = ir.per_row("double") },
  loops = { { "z", 1 } }, length = V("rows"),
  stages = { ir.map("row_scale", D(1) / L("total", 0)) },
})

ops.sinkhorn_columns = ir.op({
  name = "poa_train_sinkhorn_columns",
  math = { "colsum[j] = sum over rows i of e[i, j] row_scale[i] (double, written)" },
  params = { { "colsum", "out" }, { "e", "in" }, { "row_scale", "in" }, { "rows", "long" }, { "k", "long" } },
  tensors = { colsum = ir.vector("double"), e = ir.rows("k"), row_scale = ir.per_row("double") },
  length = V("k"),
  stages = {
    ir.colsum({ over = { { "r", "rows" } }, outputs = { { "colsum", to_double(L("e")) * L("row_scale"), assign = true } } }),
  },
})

ops.sinkhorn_column_scale = ir.op({
  name = "poa_train_sinkhorn_column_scale",
  math = { "column_scale[j] = 1 / (k colsum[j]), j < k" },
  params = { { "column_scale", "out" }, { "colsum", "in" }, { "k", "long" } },
  tensors = { column_scale = ir.vector("double"), colsum = ir.vector("double") },
  loops = { { "z", 1 } }, length = V("k"),
  stages = { ir.map("column_scale", D(1) / (to_double(V("k")) * L("colsum"))) },
})

ops.sinkhorn_rows = ir.op({
  name = "poa_train_sinkhorn_rows",
  math = { "row_scale[i] = 1 / (samples sum_j e[i, j] column_scale[j]) (samples: the global batch)" },
  params = { { "row_scale", "out" }, { "e", "in" }, { "column_scale", "in" }, { "samples", "long" }, { "rows", "long" },
             { "k", "long" } },
  tensors = { row_scale = ir.per_row("double"), e = ir.rows("k"), column_scale = ir.vector("double") },
  length = V("k"),
  stages = {
    ir.reduce("s", to_double(L("e")) * L("column_scale"), { type = "double" }),
    ir.store("row_scale", D(1) / (to_double(V("samples")) * V("s"))),
  },
})

ops.sinkhorn_finish = ir.op({
  name = "poa_train_sinkhorn_finish",
  math = { "targets[i, j] = e[i, j] row_scale[i] column_scale[j] samples (targets may be e itself)" },
  params = { { "targets", "out" }, { "e", "in" }, { "row_scale", "in" }, { "column_scale", "in" }, { "samples", "long" },
             { "rows", "long" }, { "k", "long" } },
  tensors = { targets = ir.rows("k"), e = ir.rows("k"), row_scale = ir.per_row("double"), column_scale = ir.vector("double") },
  length = V("k"),
  stages = {
    ir.map("targets", to_real(to_double(L("e")) * L("row_scale") * L("column_scale") * to_double(V("samples")))),
  },
})

ops.order = { "adamw", "ema", "cast_bf16", "sum_squares", "sum", "clip_scale", "max_partial", "max",
              "softmax", "cross_entropy", "sinkhorn_exp", "sinkhorn_fill", "sinkhorn_columns",
              "sinkhorn_column_scale", "sinkhorn_rows", "sinkhorn_finish" }

return ops
