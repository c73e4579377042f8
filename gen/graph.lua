-- gen/graph.lua: the graph IR of a member's forward and its op table.
--
-- A family's forward (models/<family>.lua, `forward(g, m)`) is written once against a graph
-- builder g: every call adds one node (an op of the table below) and returns its output values.
-- gen/program.lua lowers the graph to the flat program the runtime executes (runtime/program.c).
--
-- Values: {id, name, kind, rows, cols, elem}. kind is
--   "act"    an activation (rows x cols, rows symbolic in the batch), placed in the arena
--   "param"  a tensor of the parameter buffer, by its state-dict name (the runtime resolves
--            the offset), read as a prefix slice with leading dimension `ld`
--   "input"  bound per call by the runtime: images, mask, drop_scale
--   "const"  bound by the runtime from the pass: the resampling matrix, a vector of ones
-- and, in a backward program (gen/backward.lua),
--   "saved"  an activation of the forward, where the forward left it
--   "grad"   a parameter's gradient in the full-size gradient buffer, by state-dict name
-- Sizes and offsets are "lin"s {b, c}: b * batch + c elements (the batch stays symbolic).
-- An operand is {value = v, offset = lin} (a view into a value).
local ops = require("gen.ops")

local graph = {}

function graph.lin(b, c) return { b = b or 0, c = c or 0 } end
local lin = graph.lin
-- x as a lin: an integer is the constant x.
function graph.lin_of(x) return type(x) == "number" and lin(0, x) or x end

-- The runtime kernels that are not row-wise ops of gen/ops.lua (runtime/program.c), with the
-- C parameter order of each; "out"/"in"/"mask" are buffers, the rest scalars.
graph.runtime_kernels = {
  patchify = { params = { { "patches", "out" }, { "images", "in" }, { "batch", "long" }, { "channels", "long" },
                          { "size", "long" }, { "patch", "long" } } },
  fill_rows = { params = { { "y", "out" }, { "ld", "long" }, { "vec", "in" }, { "rows", "long" },
                           { "cols", "long" } } },
  attention_forward = { params = { { "out", "out" }, { "probs", "out" }, { "qkv", "in" }, { "batch", "long" },
                                   { "tokens", "long" } } },
  attention_backward = { params = { { "dqkv", "out" }, { "work", "out" }, { "dout", "in" }, { "qkv", "in" },
                                    { "probs", "in" }, { "batch", "long" }, { "tokens", "long" } } },
  -- dst[:cols] += the sum of the rows of src (rows x cols, ld apart)
  column_sum = { params = { { "dst", "out" }, { "src", "in" }, { "ld", "long" }, { "rows", "long" },
                            { "cols", "long" } } },
  -- y[:n] += x[:n]
  add = { params = { { "y", "out" }, { "x", "in" }, { "n", "long" } } },
  -- dst (bf16, rows x cols, ld apart) = src rounded to nearest even (GPU programs only)
  to_bf16 = { params = { { "dst", "out" }, { "src", "in" }, { "ld", "long" }, { "rows", "long" },
                         { "cols", "long" } } },
}

-- The C parameter list of a kernel: a row-wise op of gen/ops.lua or a runtime kernel.
function graph.kernel_params(name)
  local op = ops[name] or graph.runtime_kernels[name]
  assert(op and op.params, "graph: unknown kernel " .. tostring(name))
  return op.params
end

local Graph = {}
Graph.__index = Graph

-- A new graph for member m (the table models/<family>.lua's forward reads: widths, depth,
-- block ids, token counts, flags).
function graph.new(m)
  return setmetatable({ m = m, values = {}, nodes = {}, named = {}, made = 0 }, Graph)
end

local function add_value(g, v)
  v.id = #g.values + 1
  v.elem = v.elem or "real"
  g.values[v.id] = v
  return v
end

-- An activation of rows (a lin) x cols.
function Graph:act(name, rows, cols)
  return add_value(self, { name = name, kind = "act", rows = rows, cols = cols })
end

-- The value of g under key (made by make() the first time it is asked for): each parameter,
-- gradient, input and const is one value however often the forward names it.
local function interned(g, key, make)
  if not g.named[key] then g.named[key] = add_value(g, make()) end
  return g.named[key]
end

-- A parameter tensor by state-dict name (nil name: absent, returns nil); ld: its row length.
function Graph:param(name, ld)
  if not name then return nil end
  return interned(self, "param " .. name, function() return { name = name, kind = "param", ld = ld } end)
end

-- A forward activation as the backward reads it, and a parameter's gradient.
function Graph:saved(name, rows, cols)
  return add_value(self, { name = name, kind = "saved", rows = rows, cols = cols })
end
function Graph:grad(name, ld)
  return interned(self, "grad " .. name, function() return { name = name, kind = "grad", ld = ld } end)
end

function Graph:input(name, elem)
  return interned(self, "input " .. name, function() return { name = name, kind = "input", elem = elem } end)
end

function Graph:const(name)
  return interned(self, "const " .. name, function() return { name = name, kind = "const" } end)
end

-- A view of value v at element offset (a lin or integer); a view given no offset is itself.
function graph.at(v, offset)
  if v == nil or (v.value and offset == nil) then return v end
  return { value = v, offset = graph.lin_of(offset or 0) }
end
function Graph:at(v, offset) return graph.at(v, offset) end
local view = graph.at

-- Records node t of op. Its outputs (t.outs, field names) are the activations made since the
-- previous node, its inputs (t.ins) its other values and views: what gen/backward.lua reads.
local function node(g, op, t)
  t.op, t.ins, t.outs = op, {}, {}
  for k, x in pairs(t) do
    local v = type(x) == "table" and (x.value or x)
    if v and v.kind then table.insert(v.kind == "act" and v.id > g.made and t.outs or t.ins, k) end
  end
  table.sort(t.ins)
  table.sort(t.outs)
  g.made = #g.values
  g.nodes[#g.nodes + 1] = t
  return t
end

-- The ops. Each records a node {op, inputs..., outputs...}; gen/program.lua's lowering of each
-- op is beside it in program.lowerings.

-- patches[b*N + n][c*P*P + ky*P + kx] = images[b][c][gy*P + ky][gx*P + kx], n = gy*G + gx.
function Graph:patchify(name, images)
  local m = self.m
  local out = self:act(name, lin(m.patches, 0), m.patch_len)
  node(self, "patchify", { x = view(images), y = out })
  return out
end

-- y (rows x groups*n) = alpha * x (rows x k) W_g[:n, :k]^T + bias_g[:n] for each group g:
-- W_g starts at row g*group_stride of the full weight (rows ldw apart), its bias at
-- element g*group_stride; output group g is columns g*n .. g*n + n - 1. Groups that follow
-- each other in the weight (group_stride == n: the full width's q, k, v) are one linear.
function Graph:linear(t)
  local groups, n = t.groups or 1, t.n
  if groups > 1 and t.group_stride == n then groups, n = 1, n * groups end
  local out = self:act(t.name, t.x.rows, n * groups)
  node(self, "linear", { x = view(t.x), w = t.weight, bias = t.bias, y = out, n = n, k = t.k,
                         ldw = t.weight.ld, alpha = t.alpha, groups = groups,
                         group_stride = groups > 1 and t.group_stride or 0 })
  return out
end

-- y = LayerNorm(x) * w + b over the cols channels of each row; mean and rstd per row.
function Graph:layernorm(t)
  local y = self:act(t.y, t.x.rows, t.x.cols)
  local mean = self:act(t.mean, t.x.rows, 1)
  local rstd = self:act(t.rstd, t.x.rows, 1)
  node(self, "layernorm", { x = view(t.x), w = view(t.weight), b = view(t.bias), y = y, mean = mean, rstd = rstd })
  return y, mean, rstd
end

-- Multi-head softmax attention over qkv (rows x 3D): out (rows x D), probs (B x H x T x T).
function Graph:attention(t)
  local m = self.m
  local out = self:act(t.out, t.qkv.rows, m.width)
  local probs = self:act(t.probs, lin(m.heads * m.tokens * m.tokens, 0), 1)
  node(self, "attention", { qkv = view(t.qkv), y = out, probs = probs })
  return out, probs
end

-- y = x + s[b] * gamma * h (LayerScale gamma, or ones; s the drop-path scale, or 1).
function Graph:residual(t)
  local y = self:act(t.name, t.x.rows, t.x.cols)
  node(self, "residual", { x = view(t.x), h = view(t.h), gamma = view(t.gamma or self:const("ones")),
                           scale = view(t.scale), y = y })
  return y
end

function Graph:gelu(name, u)
  local y = self:act(name, u.rows, u.cols)
  node(self, "gelu", { x = view(u), y = y })
  return y
end

-- The position table of this grid: the parameter itself at the native grid (rows ld apart),
-- else [row 0; R * rows 1..] with R the bicubic resampling matrix (a const of the runtime).
function Graph:position_table(name, pos_embed)
  local m = self.m
  if m.grid == m.native_grid then return pos_embed, pos_embed.ld end
  local out = self:act(name, lin(0, m.tokens), m.width)
  node(self, "resample_pos", { x = view(pos_embed), r = view(self:const("resample")), y = out })
  return out, m.width
end

-- x[b,0] = cls + pos[0]; x[b,1+n] = (mask[b,n] ? mask_token : patch[b*N+n]) + pos[1+n].
function Graph:tokens(t)
  local m = self.m
  local y = self:act(t.name, lin(m.tokens, 0), m.width)
  node(self, "tokens", { patch = view(t.patch), cls = view(t.cls), mask_token = view(t.mask_token),
                         pos = view(t.pos), pos_ld = t.pos_ld, mask = view(t.mask), y = y })
  return y
end

-- Marks v as the graph's output (kept to the end of the program).
function Graph:output(v)
  self.output_value = v
  return v
end

return graph
