-- gen/backward.lua: the backward of a forward graph (gen/graph.lua) by reverse mode, lowered to
-- the same flat steps as the forward (gen/program.lua) and run by the same executor.
--
-- The nodes are visited in reverse; each op's backward rule (backward.rules, one per op of
-- the graph) reads the cotangent of its outputs and adds to the cotangents of its inputs:
--   * a parameter's cotangent is its slice of the one full-size gradient buffer (value kind
--     "grad", by state-dict name, leading dimension of the full tensor): always accumulated
--     (beta = 1), so both students add into it and entries outside a member's slice stay
--     untouched;
--   * an activation's cotangent "d.<name>" is a value of the backward's own arena, laid out by
--     liveness: the first contribution writes it (GEMM beta 0, a kernel's written output, or
--     an alias: the residual passes its output's cotangent on to x unchanged), later ones add
--     (GEMM beta 1, or a written part "d.<name>.<n>" and an add step);
--   * the cotangent of the graph's output is the input "dout".
-- Forward activations the rules read are values of kind "saved" (the runtime binds them where
-- the forward left them). The recompute policy names the ops whose outputs are not kept but
-- computed again by the backward (into an activation of its own arena), by the forward's own
-- lowering, just before their first use:
-- GELU's g (from u) and the LayerNorms' y (from x with the saved mean and rstd): rows x
-- (hidden + 2 width) per block that a ViT-L would otherwise keep.
local graph = require("gen.graph")
local program = require("gen.program")

local backward = {}
local lin = graph.lin
local st = program.steps

-- op -> the output field recomputed, by the op's own forward lowering or, when given, by
-- another one (a fused residual + LayerNorm recomputes only its LayerNorm)
backward.recompute = {
  gelu = { field = "y" },
  layernorm = { field = "y" },
  residual_layernorm = { field = "ln", lower = function(s, t)
    program.lowerings.layernorm(s, { x = t.y, w = t.w, b = t.b, y = t.ln, mean = t.mean, rstd = t.rstd })
  end },
}

local function value_of(f) return f and (f.value or f) end
local function is_view(f) return f and f.value ~= nil end

local State = {}
State.__index = State

-- The backward graph's value standing for forward value v (activations as "saved").
function State:import(v)
  local b = self.map[v.id]
  if b then return b end
  if v.kind == "param" then b = self.gb:param(v.name, v.ld)
  elseif v.kind == "input" then b = self.gb:input(v.name, v.elem)
  elseif v.kind == "const" then b = self.gb:const(v.name)
  else b = self.gb:saved(v.name, v.rows, v.cols) end
  self.map[v.id] = b
  return b
end

-- A forward view (or value) as a view (or value) of the backward graph, and as an operand of a step.
function State:tview(f)
  if is_view(f) then return { value = self:import(f.value), offset = f.offset } end
  return f and self:import(f)
end
function State:view(f) return f and st.operand(self:tview(f)) end

-- A forward activation a rule reads: kept, or recomputed here by its producer's forward
-- lowering (once) when the policy says so.
function State:need(f)
  local v = value_of(f)
  local n = self.producer[v.id]
  local policy = n and backward.recompute[n.op]
  if policy and n[policy.field] == v and not self.recomputed[n] then
    self.recomputed[n] = true
    -- recomputed into the backward's own arena: the forward need not keep a place for it
    self.map[v.id] = self.gb:act(v.name, v.rows, v.cols)
    local t = {}
    for k, x in pairs(n) do t[k] = x end
    for _, fields in ipairs({ n.ins, n.outs }) do
      for _, k in ipairs(fields) do t[k] = self:tview(n[k]) end
    end
    local first = #self.steps + 1
    local lower = policy.lower or program.lowerings[n.op]
    lower(self, t)
    for i = first, #self.steps do self.steps[i].note = "recompute " .. v.name end
  end
  return self:view(f)
end

-- The cotangent of forward value v as an operand at view f's offset (nil: none yet).
function State:cot(f)
  local v = value_of(f)
  local c = self.cots[v.id]
  if not c then return nil end
  return { value = c.id, offset = is_view(f) and f.offset or lin(0, 0) }
end

-- Where a contribution to d(f) goes: (operand, accumulate). Parameters: their gradient,
-- accumulated; an activation's first contribution writes its cotangent.
function State:target(f)
  local v = value_of(f)
  if v.kind == "param" then
    local gv = self.gb:grad(v.name, v.ld)
    self.cots[v.id] = gv
    return { value = gv.id, offset = is_view(f) and f.offset or lin(0, 0) }, true
  end
  assert(v.kind == "act", "backward: a cotangent of " .. v.kind .. " " .. v.name)
  if self.cots[v.id] then return self:cot(f), true end
  self.cots[v.id] = self.gb:act("d." .. v.name, v.rows, v.cols)
  return self:cot(f), false
end

-- Emits write(operand) for a kernel that writes its output: into d(f) directly when this is
-- the first contribution, else into a fresh part that is then added.
function State:written(f, write)
  local v = value_of(f)
  local to, acc = self:target(f)
  if not acc then return write(to) end
  assert(not is_view(f) or (f.offset.b == 0 and f.offset.c == 0), "backward: a written part of a view")
  self.parts = self.parts + 1
  local part = self.gb:act("d." .. v.name .. "." .. self.parts, v.rows, v.cols)
  write(st.operand(part))
  st.kernel(self, "add", { y = to, x = st.operand(part), n = program.lin_mul(v.rows, v.cols) })
end

function State:needs_grad(f) return f ~= nil and self.needs[value_of(f).id] end

-- A scratch activation of the backward (rows x cols).
function State:scratch(name, rows, cols)
  return st.operand(self.gb:act(name, rows, cols))
end

local rules = {}
backward.rules = rules

-- y_g = alpha x W_g^T + b_g: db_g += colsum dy_g; dW_g += alpha dy_g^T x; dx (+)= alpha dy_g W_g.
function rules.linear(s, n)
  local rows, ldy = n.y.rows, n.n * n.groups
  local x = s:need(n.x)
  for g = 0, n.groups - 1 do
    local dy = s:cot(graph.at(n.y, g * n.n))
    if n.bias then
      st.kernel(s, "column_sum", { dst = s:target(graph.at(n.bias, g * n.group_stride)), src = dy, ld = ldy,
                                   rows = rows, cols = n.n })
    end
    st.gemm(s, { what = "d." .. n.w.name, ta = 1, tb = 0, m = lin(0, n.n), n = n.k, k = rows, alpha = n.alpha,
                 a = dy, lda = ldy, b = x, ldb = n.k, beta = 1,
                 c = s:target(graph.at(n.w, g * n.group_stride * n.ldw)), ldc = n.ldw })
    if s:needs_grad(n.x) then
      local dx, acc = s:target(n.x)
      st.gemm(s, { what = "d." .. value_of(n.x).name, ta = 0, tb = 0, m = rows, n = n.k, k = n.n, alpha = n.alpha,
                   a = dy, lda = ldy, b = s:view(graph.at(n.w, g * n.group_stride * n.ldw)), ldb = n.ldw,
                   beta = acc and 1 or 0, c = dx, ldc = n.k })
    end
  end
end

-- dx (+)= LayerNorm's input gradient; dw += sum dy xhat, db += sum dy.
function rules.layernorm(s, n)
  local dy, x, mean, rstd = s:cot(n.y), s:need(n.x), s:need(n.mean), s:need(n.rstd)
  s:written(n.x, function(dx)
    st.kernel(s, "layernorm_backward", { dx = dx, dw = s:target(n.w), db = s:target(n.b), dy = dy, x = x,
                                         mean = mean, rstd = rstd, w = s:view(n.w), rows = n.y.rows })
  end)
end

-- dqkv from dout, qkv and the saved softmax (templates/attention_*: the math is there). MACs:
-- its four batched matmuls (dv = P^T dout, dP = dout v^T, dq = dS k, dk = dS^T q).
function rules.attention(s, n)
  local m = s.m
  local dy, qkv, probs = s:cot(n.y), s:need(n.qkv), s:need(n.probs)
  local work = s:scratch("d." .. n.y.name .. ".work", n.probs.rows, n.probs.cols)
  s:written(n.qkv, function(dqkv)
    st.kernel(s, "attention_backward", { dqkv = dqkv, work = work, dout = dy, qkv = qkv, probs = probs,
                                         batch = lin(1, 0), tokens = m.tokens },
      lin(4 * m.tokens * m.tokens * m.width, 0))
  end)
end

-- The residual's x gets its output's cotangent dy unchanged: an alias when it is the first
-- contribution to d(x), else added (or copied into a view).
local function pass_on(s, n, dy)
  local x = value_of(n.x)
  if not s.cots[x.id] and s.gb.values[dy.value].kind == "act"
     and n.x.offset.b == 0 and n.x.offset.c == 0 then
    s.cots[x.id] = s.gb.values[dy.value]
  else
    local dx, acc = s:target(n.x)
    if acc then st.kernel(s, "add", { y = dx, x = dy, n = program.lin_mul(n.y.rows, n.y.cols) })
    else st.copy(s, dy, dx, program.lin_mul(n.y.rows, n.y.cols)) end
  end
end

-- y = x + s gamma h: dh = s gamma dy, dgamma += sum s h dy, dx (+)= dy (an alias when first).
function rules.residual(s, n)
  local dy = s:cot(n.y)
  local h = s:need(n.h)
  local dgamma = value_of(n.gamma).kind == "param" and s:target(n.gamma)
                 or s:scratch("d." .. n.y.name .. ".gamma", lin(0, 1), n.y.cols)
  s:written(n.h, function(dh)
    st.kernel(s, "residual_backward", { dh = dh, dgamma = dgamma, dx = dy, h = h, gamma = s:view(n.gamma),
                                        sample_scale = s:view(n.scale), batch = lin(1, 0), tokens = s.m.tokens })
  end)
  pass_on(s, n, dy)
end

-- y = x + s gamma h, ln = LayerNorm(y) (gen/schedule.lua's fusion): d(y) (zero when nothing
-- after read the stream) += LayerNorm's input gradient in place, then as the residual's rule;
-- dw, db, dgamma accumulated (no dgamma without LayerScale).
function rules.residual_layernorm(s, n)
  local dy = s:cot(n.y)
  if not dy then
    dy = s:target(n.y)
    st.kernel(s, "fill_rows", { y = dy, ld = n.y.cols, rows = n.y.rows, cols = n.y.cols })
  end
  local dln, h = s:cot(n.ln), s:need(n.h)
  local y, mean, rstd = s:need(n.y), s:need(n.mean), s:need(n.rstd)
  local dgamma = value_of(n.gamma).kind == "param" and s:target(n.gamma) or nil
  s:written(n.h, function(dh)
    st.kernel(s, "residual_layernorm_backward", { dx = dy, dh = dh, dw = s:target(n.w), db = s:target(n.b),
      dgamma = dgamma, dy = dln, x = y, mean = mean, rstd = rstd, w = s:view(n.w), h = h,
      gamma = s:view(n.gamma), sample_scale = s:view(n.scale), batch = lin(1, 0), tokens = s.m.tokens })
  end)
  pass_on(s, n, dy)
end

function rules.gelu(s, n)
  local dy, u = s:cot(n.y), s:need(n.x)
  s:written(n.x, function(du) st.kernel(s, "gelu_backward", { du = du, dg = dy, u = u, rows = n.y.rows }) end)
end

-- Row 0: dpos_embed[0] += dpos[0]; rows 1..: dpos_embed[1..] += R^T dpos[1..].
function rules.resample_pos(s, n)
  local m = s.m
  local native, ld = m.native_grid * m.native_grid, value_of(n.x).ld
  local dpos = s:cot(n.y)
  st.kernel(s, "add", { y = s:target(n.x), x = dpos, n = m.width })
  st.gemm(s, { what = "d." .. value_of(n.x).name, ta = 1, tb = 0, m = lin(0, native), n = m.width, k = m.patches,
               alpha = 1, a = s:view(n.r), lda = native, b = program.offset(dpos, m.width), ldb = m.width, beta = 1,
               c = program.offset(s:target(n.x), ld), ldc = ld })
end

-- dpatch written (0 where masked); dcls, dmask_token, dpos accumulated (an activation's dpos
-- zeroed first).
function rules.tokens(s, n)
  local m = s.m
  local pos = value_of(n.pos)
  local dpos, acc = s:target(n.pos)
  if not acc then st.kernel(s, "fill_rows", { y = dpos, ld = pos.cols, rows = pos.rows, cols = pos.cols }) end
  s:written(n.patch, function(dpatch)
    st.kernel(s, "tokens_backward", { dpatch = dpatch, dcls = s:target(n.cls),
                                      dmask_token = n.mask_token and s:target(n.mask_token), dpos = dpos,
                                      pos_ld = n.pos_ld, dx = s:cot(n.y), mask = s:view(n.mask),
                                      batch = lin(1, 0), patches = m.patches })
  end)
end

-- Which values depend on a parameter (only those get a cotangent).
local function needs_of(g)
  local needs, producer = {}, {}
  for _, v in ipairs(g.values) do needs[v.id] = v.kind == "param" end
  for _, n in ipairs(g.nodes) do
    local any = false
    for _, k in ipairs(n.ins) do any = any or needs[value_of(n[k]).id] end
    for _, k in ipairs(n.outs) do
      local v = value_of(n[k])
      needs[v.id], producer[v.id] = any, n
    end
  end
  return needs, producer
end

-- The backward program of forward graph g (its output's cotangent is the input "dout"), in the
-- CPU's schedule or sched's (program.lower).
function backward.lower(g, title, sched)
  local s = setmetatable({ steps = {}, m = g.m, gb = graph.new(g.m), map = {}, cots = {}, recomputed = {},
                           parts = 0, sched = sched }, State)
  s.needs, s.producer = needs_of(g)
  s.cots[g.output_value.id] = s.gb:input("dout")
  for i = #g.nodes, 1, -1 do
    local n = g.nodes[i]
    local live = false
    for _, k in ipairs(n.outs) do live = live or s.cots[value_of(n[k]).id] ~= nil end
    if live then assert(rules[n.op], "backward: no rule for " .. n.op)(s, n) end
  end
  if sched then sched.finish(s, s.gb.values) end
  local arena = program.place(s.gb.values, s.steps)
  return { title = title, values = s.gb.values, steps = s.steps, arena = arena }
end

return backward
