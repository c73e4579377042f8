-- gen/plan.lua: the activation arena and launch order of one forward + backward pass of one
-- member (width, depth) of an elastic ViT over one crop batch.
--
-- plan.vit_pass(model, width, depth, batch, tokens, patches) ->
--   { total = elements of `real`, buffers = { {name, offset, count}, ... },
--     steps = { {op = "gemm" | "kernel" | "copy" | "axpy" | "bias_grad", phase, block, ...} } }
-- Buffers are aligned to 16 elements and never overlap. Names the C runtime looks up are listed
-- in vit_buffers below (rows = batch * tokens). Parameters and their gradients are not in the
-- arena: steps name them "param:<state-dict name>" and "param_grad:<state-dict name>", with the
-- block's intact id (reference §1.1, §1.4).
--
-- GEMMs are row-major: C (m x n) = alpha * op(A) (m x k) * op(B) (k x n) + beta * C, op = "N" or
-- "T"; the weights are the full-size parameters (prefix slices, leading dimension of the intact
-- network), alpha = Dmax / D on the inputs of qkv, proj, fc1 and fc2 (reference §1.3). The bias
-- add of a forward GEMM and the bias gradient (column sums, "bias_grad") are not scaled.
local space = require("gen.space")

local plan = {}

local ALIGN = 16

local function align(n) return (n + ALIGN - 1) // ALIGN * ALIGN end

-- 0-based ids of the intact blocks a depth-L member runs (reference §1.4).
plan.block_ids = space.block_ids

-- The buffer list {name, count} of a pass, in arena order.
local function vit_buffers(d, f, h, depth, batch, tokens, patches, cpp)
  local rows = batch * tokens
  local list = {
    { "patches", batch * patches * cpp }, { "patch_tokens", batch * patches * d },
    { "pos", tokens * d },
  }
  local function add(name, count) list[#list + 1] = { name, count } end
  for j = 0, depth - 1 do
    local p = "block" .. j .. "."
    add(p .. "x_in", rows * d)
    add(p .. "ln1_mean", rows); add(p .. "ln1_rstd", rows)
    add(p .. "qkv", rows * 3 * d); add(p .. "probs", batch * h * tokens * tokens)
    add(p .. "attn", rows * d); add(p .. "h1", rows * d); add(p .. "x_mid", rows * d)
    add(p .. "ln2_mean", rows); add(p .. "ln2_rstd", rows)
    add(p .. "u", rows * f); add(p .. "h2", rows * d)
  end
  add("x_final", rows * d); add("norm_mean", rows); add("norm_rstd", rows); add("out", rows * d)
  add("g", rows * f) -- GELU(u) of the block at hand: the backward computes it again
  add("ln", rows * d) -- the output of the LayerNorm at hand: likewise
  add("grad.x", rows * d); add("grad.ln", rows * d); add("grad.qkv", rows * 3 * d)
  add("grad.attn", rows * d); add("grad.h", rows * d); add("grad.u", rows * f)
  add("grad.g", rows * f); add("grad.work", batch * h * tokens * tokens)
  add("grad.patch_tokens", batch * patches * d); add("grad.pos", tokens * d)
  return list
end

-- Step builders. `s` collects steps; `ctx` holds the shape and the current block.
local function step(ctx, t)
  t.phase, t.block, t.j = ctx.phase, ctx.block, ctx.j
  ctx.steps[#ctx.steps + 1] = t
  return t
end

local function gemm(ctx, t)
  t.op = "gemm"
  for _, key in ipairs({ "a_offset", "b_offset", "c_offset" }) do t[key] = t[key] or 0 end
  t.trans_a, t.trans_b, t.beta = t.trans_a or "N", t.trans_b or "N", t.beta or 0
  return step(ctx, t)
end

local function kernel(ctx, name, reads, writes)
  return step(ctx, { op = "kernel", kernel = name, reads = reads, writes = writes })
end

-- Y (rows x n) = alpha * X (rows x k) W^T + bias: W (n x k) is a slice of a full weight with
-- rows ldw apart.
local function linear_forward(ctx, what, x, weight, y, n, k, ldw, alpha, extra)
  local t = { what = what, a = x, b = "param:" .. weight .. ".weight", c = y, m = ctx.rows, n = n,
              k = k, lda = k, ldb = ldw, ldc = n, trans_b = "T", alpha = alpha,
              bias = "param:" .. weight .. ".bias" }
  for key, v in pairs(extra or {}) do t[key] = v end
  return gemm(ctx, t)
end

-- Block j (intact id `id`) reads block<j>.x_in and leaves its output in x_out (the next
-- block's x_in, or x_final).
local function block_forward(ctx, j, id, x_out)
  local d, f, rows, dmax, fmax, alpha = ctx.d, ctx.f, ctx.rows, ctx.dmax, ctx.fmax, ctx.alpha
  local b, p = "block" .. j .. ".", "blocks." .. id .. "."
  ctx.block, ctx.j = id, j
  kernel(ctx, "layernorm_forward", { b .. "x_in", "param:" .. p .. "norm1.weight", "param:" .. p .. "norm1.bias" },
    { "ln", b .. "ln1_mean", b .. "ln1_rstd" })
  for g = 0, 2 do
    linear_forward(ctx, "qkv[" .. g .. "]", "ln", p .. "attn.qkv", b .. "qkv", d, d, dmax, alpha,
      { ldc = 3 * d, c_offset = g * d, b_offset = g * dmax * dmax, bias_offset = g * dmax })
  end
  kernel(ctx, "attention_forward", { b .. "qkv" }, { b .. "attn", b .. "probs" })
  linear_forward(ctx, "proj", b .. "attn", p .. "attn.proj", b .. "h1", d, d, dmax, alpha)
  step(ctx, { op = "copy", src = b .. "x_in", dst = b .. "x_mid", count = rows * d })
  kernel(ctx, "residual_forward", { b .. "h1", "param:" .. p .. "ls1.gamma", "sample_scale" }, { b .. "x_mid" })
  kernel(ctx, "layernorm_forward", { b .. "x_mid", "param:" .. p .. "norm2.weight", "param:" .. p .. "norm2.bias" },
    { "ln", b .. "ln2_mean", b .. "ln2_rstd" })
  linear_forward(ctx, "fc1", "ln", p .. "mlp.fc1", b .. "u", f, d, dmax, alpha)
  kernel(ctx, "gelu_forward", { b .. "u" }, { "g" })
  linear_forward(ctx, "fc2", "g", p .. "mlp.fc2", b .. "h2", d, f, fmax, alpha)
  step(ctx, { op = "copy", src = b .. "x_mid", dst = x_out, count = rows * d })
  kernel(ctx, "residual_forward", { b .. "h2", "param:" .. p .. "ls2.gamma", "sample_scale" }, { x_out })
end

-- The gradients of Y = alpha * X W^T + bias: dX (written or added with beta) and dW, dbias
-- (accumulated into the parameter gradients).
local function linear_backward(ctx, what, dy, x, weight, dx, n, k, ldw, opt)
  opt = opt or {}
  local rows, alpha = ctx.rows, ctx.alpha
  local ldy = opt.ldy or n
  gemm(ctx, { what = what .. " dgrad", a = dy, a_offset = opt.dy_offset, b = "param:" .. weight .. ".weight",
              b_offset = opt.w_offset, c = dx, m = rows, n = k, k = n, lda = ldy, ldb = ldw, ldc = k,
              alpha = alpha, beta = opt.beta })
  gemm(ctx, { what = what .. " wgrad", a = dy, a_offset = opt.dy_offset, b = x,
              c = "param_grad:" .. weight .. ".weight", c_offset = opt.w_offset, m = n, n = k,
              k = rows, lda = ldy, ldb = k, ldc = ldw, trans_a = "T", alpha = alpha, beta = 1 })
  step(ctx, { op = "bias_grad", what = what .. " bgrad", src = dy, src_offset = opt.dy_offset or 0,
              ld = ldy, m = rows, n = n, dst = "param_grad:" .. weight .. ".bias",
              dst_offset = opt.bias_offset or 0 })
end

local function block_backward(ctx, j, id)
  local d, f, rows, dmax, fmax = ctx.d, ctx.f, ctx.rows, ctx.dmax, ctx.fmax
  local b, p = "block" .. j .. ".", "blocks." .. id .. "."
  ctx.block, ctx.j = id, j
  kernel(ctx, "residual_backward", { "grad.x", b .. "h2", "param:" .. p .. "ls2.gamma", "sample_scale" },
    { "grad.h", "param_grad:" .. p .. "ls2.gamma" })
  kernel(ctx, "gelu_forward", { b .. "u" }, { "g" }) -- again, for fc2's weight gradient
  linear_backward(ctx, "fc2", "grad.h", "g", p .. "mlp.fc2", "grad.g", d, f, fmax)
  kernel(ctx, "gelu_backward", { "grad.g", b .. "u" }, { "grad.u" })
  kernel(ctx, "layernorm_forward", { b .. "x_mid", "param:" .. p .. "norm2.weight", "param:" .. p .. "norm2.bias" },
    { "ln", b .. "ln2_mean", b .. "ln2_rstd" }) -- ln2 again, for fc1's weight gradient
  linear_backward(ctx, "fc1", "grad.u", "ln", p .. "mlp.fc1", "grad.ln", f, d, dmax)
  kernel(ctx, "layernorm_backward", { "grad.ln", b .. "x_mid", b .. "ln2_mean", b .. "ln2_rstd",
    "param:" .. p .. "norm2.weight" }, { "grad.h", "param_grad:" .. p .. "norm2.weight", "param_grad:" .. p .. "norm2.bias" })
  step(ctx, { op = "axpy", src = "grad.h", dst = "grad.x", count = rows * d, alpha = 1 })
  kernel(ctx, "residual_backward", { "grad.x", b .. "h1", "param:" .. p .. "ls1.gamma", "sample_scale" },
    { "grad.h", "param_grad:" .. p .. "ls1.gamma" })
  linear_backward(ctx, "proj", "grad.h", b .. "attn", p .. "attn.proj", "grad.attn", d, d, dmax)
  kernel(ctx, "attention_backward", { "grad.attn", b .. "qkv", b .. "probs" }, { "grad.qkv", "grad.work" })
  kernel(ctx, "layernorm_forward", { b .. "x_in", "param:" .. p .. "norm1.weight", "param:" .. p .. "norm1.bias" },
    { "ln", b .. "ln1_mean", b .. "ln1_rstd" }) -- ln1 again, for qkv's weight gradients
  for g = 0, 2 do
    linear_backward(ctx, "qkv[" .. g .. "]", "grad.qkv", "ln", p .. "attn.qkv", "grad.ln", d, d, dmax,
      { ldy = 3 * d, dy_offset = g * d, w_offset = g * dmax * dmax, bias_offset = g * dmax,
        beta = g == 0 and 0 or 1 })
  end
  kernel(ctx, "layernorm_backward", { "grad.ln", b .. "x_in", b .. "ln1_mean", b .. "ln1_rstd",
    "param:" .. p .. "norm1.weight" }, { "grad.h", "param_grad:" .. p .. "norm1.weight", "param_grad:" .. p .. "norm1.bias" })
  step(ctx, { op = "axpy", src = "grad.h", dst = "grad.x", count = rows * d, alpha = 1 })
end

local function embed_forward(ctx, cpp)
  gemm(ctx, { what = "patch_embed", a = "patches", b = "param:patch_embed.proj.weight", c = "patch_tokens",
              m = ctx.batch * ctx.patches, n = ctx.d, k = cpp, lda = cpp, ldb = cpp, ldc = ctx.d,
              trans_b = "T", alpha = 1, bias = "param:patch_embed.proj.bias" })
  kernel(ctx, "pos_resample", { "param:pos_embed" }, { "pos" })
  -- the tokens are the first block's input (or the final LayerNorm's, for depth 0)
  kernel(ctx, "tokens_forward", { "patch_tokens", "param:cls_token", "param:mask_token", "pos", "mask" },
    { ctx.first_input })
end

local function embed_backward(ctx, cpp)
  kernel(ctx, "tokens_backward", { "grad.x", "mask" },
    { "grad.patch_tokens", "param_grad:cls_token", "param_grad:mask_token", "grad.pos" })
  kernel(ctx, "pos_resample_backward", { "grad.pos" }, { "param_grad:pos_embed" })
  gemm(ctx, { what = "patch_embed wgrad", a = "grad.patch_tokens", b = "patches",
              c = "param_grad:patch_embed.proj.weight", m = ctx.d, n = cpp, k = ctx.batch * ctx.patches,
              lda = ctx.d, ldb = cpp, ldc = cpp, trans_a = "T", alpha = 1, beta = 1 })
  step(ctx, { op = "bias_grad", what = "patch_embed bgrad", src = "grad.patch_tokens", src_offset = 0,
              ld = ctx.d, m = ctx.batch * ctx.patches, n = ctx.d, dst = "param_grad:patch_embed.proj.bias",
              dst_offset = 0 })
end

function plan.vit_pass(model, width, depth, batch, tokens, patches)
  assert(tokens == patches + 1, "plan.vit_pass: tokens must be 1 + patches (one CLS token)")
  local dmax = model.width[2]
  local ctx = {
    d = width, f = model.mlp_ratio * width, h = width // model.head_dim, dmax = dmax,
    fmax = model.mlp_ratio * dmax, alpha = dmax / width, rows = batch * tokens, batch = batch,
    patches = patches, steps = {}, phase = "forward",
  }
  local cpp = model.in_channels * model.patch_size * model.patch_size
  local result = { total = 0, buffers = {}, steps = ctx.steps, block_ids = plan.block_ids(model, depth) }
  for _, b in ipairs(vit_buffers(ctx.d, ctx.f, ctx.h, depth, batch, tokens, patches, cpp)) do
    result.buffers[#result.buffers + 1] = { name = b[1], offset = result.total, count = b[2] }
    result.total = result.total + align(b[2])
  end
  ctx.first_input = depth > 0 and "block0.x_in" or "x_final"
  embed_forward(ctx, cpp)
  local ids = result.block_ids
  for j = 0, depth - 1 do
    block_forward(ctx, j, ids[j + 1], j == depth - 1 and "x_final" or ("block" .. (j + 1) .. ".x_in"))
  end
  ctx.block, ctx.j = nil, nil
  kernel(ctx, "layernorm_forward", { "x_final", "param:norm.weight", "param:norm.bias" },
    { "out", "norm_mean", "norm_rstd" })
  ctx.phase = "backward"
  kernel(ctx, "layernorm_backward", { "grad.ln", "x_final", "norm_mean", "norm_rstd", "param:norm.weight" },
    { "grad.x", "param_grad:norm.weight", "param_grad:norm.bias" })
  for j = depth - 1, 0, -1 do block_backward(ctx, j, ids[j + 1]) end
  ctx.block, ctx.j = nil, nil
  embed_backward(ctx, cpp)
  return result
end

-- The readable text of a pass: the arena then the steps.
function plan.text(pass, title)
  local lines = { title, string.format("arena: %d elements (%.1f MiB in fp32), %d buffers, %d steps",
    pass.total, pass.total * 4 / 2 ^ 20, #pass.buffers, #pass.steps) }
  lines[#lines + 1] = string.format("%-24s %12s %12s", "buffer", "offset", "count")
  for _, b in ipairs(pass.buffers) do
    lines[#lines + 1] = string.format("%-24s %12d %12d", b.name, b.offset, b.count)
  end
  lines[#lines + 1] = "steps:"
  for i, s in ipairs(pass.steps) do
    local where = s.block and string.format("block %d (j %d)", s.block, s.j) or "-"
    local what
    if s.op == "gemm" then
      what = string.format("gemm %-18s C[%s+%d] (%dx%d, ldc %d) = %.6g * %s(%s+%d, ld %d) * %s(%s+%d, ld %d) + %g C, k %d%s",
        s.what, s.c, s.c_offset, s.m, s.n, s.ldc, s.alpha, s.trans_a, s.a, s.a_offset, s.lda, s.trans_b,
        s.b, s.b_offset, s.ldb, s.beta, s.k, s.bias and string.format(", bias %s+%d", s.bias, s.bias_offset or 0) or "")
    elseif s.op == "kernel" then
      what = string.format("kernel %s(%s) -> %s", s.kernel, table.concat(s.reads, ", "), table.concat(s.writes, ", "))
    elseif s.op == "bias_grad" then
      what = string.format("bias_grad %s: %s+%d += column sums of %s+%d (%dx%d, ld %d)", s.what, s.dst,
        s.dst_offset, s.src, s.src_offset, s.m, s.n, s.ld)
    else
      what = string.format("%s %s -> %s (%d)", s.op, s.src, s.dst, s.count)
    end
    lines[#lines + 1] = string.format("%4d %-8s %-16s %s", i, s.phase, where, what)
  end
  return table.concat(lines, "\n") .. "\n"
end

return plan
