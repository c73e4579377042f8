-- gen/schedule.lua: the GPU schedule, as rewrites of the one graph (models/<family>.lua's
-- forward) and of the steps lowered from it (DESIGN.md, "Programs"). The CPU program is
-- gen/program.lua's plain lowering; the GPU program is the same graph with
--   1. each residual add (LayerScale, drop path) and the LayerNorm that reads its output fused
--      into one op, residual_layernorm (a graph rewrite: gen/program.lua lowers the fused op,
--      gen/backward.lua has its rule);
--   2. in bf16, the bias added by the GEMM's epilogue instead of a bias-rows step before it
--      (bias_epilogue: gen/program.lua's linear lowering);
--   3. in bf16, every GEMM operand read as bf16: a parameter from the parameters' bf16 shadow,
--      a constant (the resampling matrix) from its bf16 copy, anything else cast just before the
--      GEMM by a to_bf16 step into one of two cast slots (A into cast_a, B into cast_b, same ld),
--      accumulating in fp32 into an fp32 C;
--   4. every kernel step annotated with the CUDA kernels it launches (gen/emit.lua's launches
--      of the member's kernel set, the glue kernels of templates/vit_glue.cu.tmpl), each with
--      its grid and block as expressions of the batch alone.
-- runtime/program.c runs either program; the GPU backend launches what step 4 names.
local graph = require("gen.graph")
local program = require("gen.program")
local lower_cuda = require("gen.lower_cuda")

local schedule = {}
local lin = graph.lin
local st = program.steps

local function at_zero(view) return view.offset.b == 0 and view.offset.c == 0 end

-- Rewrite 1: a residual node whose output a LayerNorm node reads becomes one residual_layernorm
-- node (in the residual's place; the LayerNorm node goes). Returns the number fused.
function schedule.fuse_residual_layernorm(g)
  local residual_of, fused = {}, {}
  for _, n in ipairs(g.nodes) do
    if n.op == "residual" then residual_of[n.y.id] = n end
  end
  for _, n in ipairs(g.nodes) do
    local r = n.op == "layernorm" and at_zero(n.x) and residual_of[n.x.value.id]
    if r and not fused[r] then
      fused[r] = { op = "residual_layernorm", x = r.x, h = r.h, gamma = r.gamma, scale = r.scale, y = r.y,
                   w = n.w, b = n.b, ln = n.y, mean = n.mean, rstd = n.rstd,
                   ins = { "b", "w", table.unpack(r.ins) }, outs = { "ln", "mean", "rstd", "y" } }
      fused[n] = false
    end
  end
  local nodes, count = {}, 0
  for _, n in ipairs(g.nodes) do
    local f = fused[n]
    if f then nodes[#nodes + 1], count = f, count + 1
    elseif f == nil then nodes[#nodes + 1] = n end
  end
  g.nodes = nodes
  return count
end

-- Rewrite 3: the bf16 form of each GEMM operand (a step list and its values; slots added).
local function cast_operands(s, values)
  local slots = {}
  local function slot(which)
    if not slots[which] then
      local v = { id = #values + 1, name = "cast_" .. which, kind = "cast", elem = "bf16", size = lin(0, 0) }
      values[v.id] = v
      slots[which] = v
    end
    return slots[which]
  end
  local steps = {}
  for _, step in ipairs(s.steps) do
    if step.kind == "gemm" then
      for _, which in ipairs({ "a", "b" }) do
        local o, ld = step[which], step["ld" .. which]
        local kind = values[o.value].kind
        if kind == "param" or kind == "const" then
          step[which] = { value = o.value, offset = o.offset, bf16 = true }
        else
          local trans = step["t" .. which] == 1
          local rows, cols
          if which == "a" then rows, cols = trans and step.k or step.m, trans and step.m or step.k
          else rows, cols = trans and step.n or step.k, trans and step.k or step.n end
          -- the slot holds the largest operand cast into it: (rows - 1) ld + cols elements
          local r, c, v = graph.lin_of(rows), graph.lin_of(cols), slot(which)
          v.size = { b = math.max(v.size.b, r.b * ld + c.b), c = math.max(v.size.c, (r.c - 1) * ld + c.c) }
          local dst = { value = v.id, offset = lin(0, 0) }
          st.kernel({ steps = steps }, "to_bf16", { dst = dst, src = o, ld = ld, rows = rows, cols = cols })
          step[which] = dst
        end
      end
    end
    steps[#steps + 1] = step
  end
  s.steps = steps
end

-- Rewrite 4: the CUDA kernels of each kernel step and copy. A launch's grid and block
-- expressions, with the step's scalar arguments and the member's constants bound, become
-- extents of the batch (gen/lower_cuda.lua's lower_cuda.extent: data the executor evaluates).
local function launches_of(s)
  local set = s.sched.set
  local by_op = s.sched.launches
  local m = s.m
  for _, step in ipairs(s.steps) do
    local kernel = step.kind == "copy" and "copy" or step.kernel
    local list = step.kind ~= "gemm" and (by_op[kernel] or require("gen.emit").glue_launches[kernel])
    if list then
      local names = { WIDTH = set.width, HEADS = set.heads, HEAD_DIM = set.head_dim, HIDDEN = set.hidden,
                      T = m.tokens, tokens = m.tokens, patches = m.patches }
      local present = {}
      if step.kind == "copy" then
        names.n, present.dst = step.count, true
      else
        for i, p in ipairs(graph.kernel_params(kernel)) do
          local a = step.args[i]
          if a.scalar then names[p[1]] = a.scalar else present[p[1]] = a.buffer ~= nil end
        end
      end
      names.batch = "batch"
      step.launches = {}
      for _, k in ipairs(list) do
        local any = not k.outputs
        for _, o in ipairs(k.outputs or {}) do any = any or present[o] end
        if any then step.launches[#step.launches + 1] = lower_cuda.launch(k, names) end
      end
      assert(#step.launches > 0, "schedule: " .. kernel .. " launches nothing")
    elseif step.kind ~= "gemm" then
      error("schedule: no CUDA kernel for " .. tostring(kernel))
    end
  end
end

-- The GPU schedule of member m: {finish, bias_epilogue, set, launches} for program.lower and
-- backward.lower.
function schedule.gpu(m, bf16)
  local emit = require("gen.emit")
  local set = emit.kernel_set(m.width, m.width // m.heads, m.hidden)
  local sched = { bias_epilogue = bf16, set = set, launches = emit.launches(set) }
  function sched.finish(s, values)
    if bf16 then cast_operands(s, values) end
    launches_of(s)
  end
  return sched
end

-- The GPU training forward and backward programs of forward graph g (built fresh: the fusion
-- rewrites it); program.training's joint arena.
function schedule.gpu_programs(g, what, bf16)
  schedule.fuse_residual_layernorm(g)
  local f, b = program.training(g, what .. (bf16 and ", bf16 GEMM operands" or ", fp32"), schedule.gpu(g.m, bf16),
                                "GPU ")
  f.device, b.device = "gpu", "gpu"
  return f, b
end

return schedule
