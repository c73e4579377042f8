-- gen/lower_c.lua: lower an op of gen/ops.lua (IR of gen/ir.lua) to one C function.
-- Row stages: `#pragma omp parallel for` over the rows, one thread per row, the column loops
-- inside (reductions as `omp simd` sums, whose order is fixed at compile time).
-- Column reductions: one thread per block of COLS columns (and kept index), the rows added in
-- increasing order into a local accumulator, then added once to the output; no atomics.
-- Scalars are `real` (real.h): the same file compiles in fp32 and fp64.
-- exp and erf lower to real_fast_exp / real_fast_erf: in fp32 the inline, vectorisable
-- versions of runtime/fast_math.h (within 1.4 ulp of expf, 7.1e-8 of erf), so the `omp simd`
-- loops of GELU vectorise; in fp64 libm's exp and erf.
local ir = require("gen.ir")
local template = require("gen.template")

local lower_c = {}

local calls = { exp = "real_fast_exp", erf = "real_fast_erf", sqrt = "real_sqrt", fma = "real_fma",
                log = "log", dsqrt = "sqrt", to_real = "(real)", to_double = "(double)" }

local target = {
  real = function(v) return "(real)" .. ir.format_real(v) end,
  call = function(fn, args) return assert(calls[fn], "lower_c: unknown function " .. fn) .. "(" .. args .. ")" end,
  present = function(name) return name .. " != NULL" end,
}

-- What the C and CUDA lowerings spell differently (gen/lower_cuda.lua passes its own): the real
-- and bf16 element types, the bf16 rounding of a stored value, the expression target. The
-- helpers below take it as `lang` (default C) and serve both.
local C = { real = "real", bf16 = "uint16_t", round = "poa_bf16_from_real", target = target }

function lower_c.printer(op, lang)
  local ctx = { op = op, row = op.row, column = "i" }
  return function(e) return ir.print(e, (lang or C).target, ctx) end
end
local printer = lower_c.printer

local scalar_ctypes = { mask = "const unsigned char *", long = "long ", double = "double " }

local function ctype_of(op, p, lang)
  if p[2] == "real" then return lang.real .. " " end
  if scalar_ctypes[p[2]] then return scalar_ctypes[p[2]] end
  local e = op.tensors[p[1]].type
  return (p[2] == "in" and "const " or "") .. (lang[e] or e) .. " *"
end

function lower_c.params(op, lang)
  local list = {}
  for _, p in ipairs(op.params) do list[#list + 1] = ctype_of(op, p, lang or C) .. p[1] end
  return table.concat(list, ", ")
end

-- The row length as text: a constant name, or the printed runtime expression.
function lower_c.length(op, p)
  if type(op.length) == "string" then return op.length end
  return p(op.length)
end
local length_of = lower_c.length

-- The stored value of e into tensor t: rounded to bf16 for bf16 tensors.
function lower_c.stored(op, t, text, lang)
  if op.tensors[t].type == "bf16" then return (lang or C).round .. "(" .. text .. ")" end
  return text
end
local stored = lower_c.stored

-- The op's math lines, each after prefix (inside a comment).
function lower_c.math(op, prefix)
  local lines = {}
  for _, m in ipairs(op.math) do lines[#lines + 1] = prefix .. m end
  return table.concat(lines, "\n")
end

-- The line of a let after pad: its type its own, int for a condition, else the real type.
function lower_c.let(pad, name, e, ctype, p, lang)
  local t = ctype or (ir.is_condition(e) and "int") or (lang or C).real
  return string.format("%sconst %s %s = %s;", pad, t, name, p(e))
end

-- Does text name the variable name?
function lower_c.names(text, name) return text:find("%f[%w_]" .. name .. "%f[^%w_]") ~= nil end

-- The runtime scalars the op derives from its parameters, one line each.
function lower_c.prelude(op, lines, p)
  for _, pre in ipairs(op.prelude) do
    lines[#lines + 1] = string.format("    const long %s = %s;", pre[1], p(pre[2]))
  end
end

-- The largest of 16, 8, ..., 1 that divides n: the column block of the column reductions
-- (16 floats: whole cache lines per row, and D / 16 parallel tasks).
function lower_c.column_block(n)
  local cb = 16
  while n % cb ~= 0 do cb = cb // 2 end
  return cb
end

local function indent(n) return string.rep("    ", n) end

-- Nested row loops; returns the lines opening them and the depth inside.
local function open_loops(lines, loops, depth, p)
  for _, l in ipairs(loops) do
    lines[#lines + 1] = string.format("%sfor (long %s = 0; %s < %s; %s++)", indent(depth), l[1], l[1],
      p(l[2]), l[1])
  end
  lines[#lines] = lines[#lines] .. " {"
  return depth + 1
end

local function row_body(op, lines, depth)
  local p = printer(op)
  local len = length_of(op, p)
  for _, s in ipairs(op.row_stages) do
    local pad = indent(depth)
    if s.stage == "reduce" then
      local t = s.type == "double" and "double" or "real"
      if s.combine == "max" then
        lines[#lines + 1] = string.format("%s%s %s = -INFINITY;", pad, t, s.name)
        lines[#lines + 1] = pad .. "#pragma omp simd reduction(max:" .. s.name .. ")"
        lines[#lines + 1] = string.format("%sfor (long i = 0; i < %s; i++) { const %s v = %s; %s = v > %s ? v : %s; }",
          pad, len, t, p(s.expr), s.name, s.name, s.name)
      else
        lines[#lines + 1] = string.format("%s%s %s = 0;", pad, t, s.name)
        lines[#lines + 1] = pad .. "#pragma omp simd reduction(+:" .. s.name .. ")"
        lines[#lines + 1] = string.format("%sfor (long i = 0; i < %s; i++) %s += %s;", pad, len, s.name, p(s.expr))
      end
    elseif s.stage == "let" then
      lines[#lines + 1] = lower_c.let(pad, s.name, s.expr, s.ctype, p)
    elseif s.stage == "store" then
      lines[#lines + 1] = string.format("%s%s[%s] = %s;", pad, s.target, p(s.row or op.row),
        stored(op, s.target, p(s.expr)))
    elseif s.stage == "map" then
      local t = op.tensors[s.target]
      local out = p(ir.load(s.target, s.row))
      assert(t.shape == "rows" or t.shape == "span" or t.shape == "vector",
        op.name .. ": map target must be a row, span or vector tensor")
      assert(not (s.accumulate and t.type == "bf16"), op.name .. ": no += into a bf16 tensor")
      local inner = pad
      if s.where then
        lines[#lines + 1] = pad .. "if (" .. p(s.where) .. ") {"
        inner = indent(depth + 1)
      end
      lines[#lines + 1] = inner .. "#pragma omp simd"
      lines[#lines + 1] = string.format("%sfor (long i = 0; i < %s; i++) %s %s %s;", inner, len, out,
        s.accumulate and "+=" or "=", stored(op, s.target, p(s.expr)))
      if s.where then lines[#lines + 1] = pad .. "}" end
    end
  end
end

local function row_stages(op, lines)
  if #op.row_stages == 0 then return end
  local p = printer(op)
  local collapse = #op.loops > 1 and (" collapse(" .. #op.loops .. ")") or ""
  lines[#lines + 1] = indent(1) .. "#pragma omp parallel for" .. collapse .. " schedule(static)"
  local depth = open_loops(lines, op.loops, 1, p)
  row_body(op, lines, depth)
  lines[#lines + 1] = indent(1) .. "}"
end

local function colsum(op, s, lines, dims)
  local p = printer(op)
  local runtime = type(op.length) ~= "string" or dims == nil
  -- a length known at run time only: blocks of 16 columns, the last one shorter
  local cb = runtime and 16 or lower_c.column_block(assert(dims[op.length], "lower_c: unknown length " .. tostring(op.length)))
  local len = length_of(op, p)
  local depth = 1
  local names = {}
  for _, o in ipairs(s.outputs) do names[#names + 1] = o.target end
  lines[#lines + 1] = string.format("%s/* %s: column sums over the rows, %d columns per thread. */",
    indent(1), table.concat(names, ", "), cb)
  if s.when then
    lines[#lines + 1] = indent(1) .. "if (" .. p(s.when) .. ") {"
    depth = 2
  end
  lines[#lines + 1] = string.format("%s#pragma omp parallel for collapse(%d) schedule(static)",
    indent(depth), #s.keep + 1)
  for _, l in ipairs(s.keep) do
    lines[#lines + 1] = string.format("%sfor (long %s = 0; %s < %s; %s++)", indent(depth), l[1], l[1], p(l[2]), l[1])
  end
  lines[#lines + 1] = string.format("%sfor (long c0 = 0; c0 < %s; c0 += %d) {", indent(depth), len, cb)
  local d1 = depth + 1
  local count = tostring(cb)
  if runtime then
    count = "count"
    lines[#lines + 1] = string.format("%sconst int count = %s - c0 < %d ? (int)(%s - c0) : %d;", indent(d1), len, cb, len, cb)
  end
  for i, o in ipairs(s.outputs) do
    local t = op.tensors[o.target].type == "double" and "double" or "real"
    lines[#lines + 1] = string.format("%s%s acc%d[%d] = {0}; /* %s */", indent(d1), t, i - 1, cb, o.target)
  end
  local d2 = open_loops(lines, s.over, d1, p)
  for _, l in ipairs(s.lets) do
    lines[#lines + 1] = lower_c.let(indent(d2), l[1], l[2], l[3], p)
  end
  local d3 = d2
  if s.where then
    lines[#lines + 1] = indent(d2) .. "if (" .. p(s.where) .. ") {"
    d3 = d2 + 1
  end
  lines[#lines + 1] = indent(d3) .. "#pragma omp simd"
  lines[#lines + 1] = string.format("%sfor (int c = 0; c < %s; c++) {", indent(d3), count)
  lines[#lines + 1] = indent(d3 + 1) .. "const long i = c0 + c;"
  for i, o in ipairs(s.outputs) do
    lines[#lines + 1] = string.format("%sacc%d[c] += %s;", indent(d3 + 1), i - 1, p(o.expr))
  end
  lines[#lines + 1] = indent(d3) .. "}"
  if s.where then lines[#lines + 1] = indent(d2) .. "}" end
  lines[#lines + 1] = indent(d1) .. "}"
  lines[#lines + 1] = string.format("%sfor (int c = 0; c < %s; c++) {", indent(d1), count)
  lines[#lines + 1] = indent(d1 + 1) .. "const long i = c0 + c;"
  for i, o in ipairs(s.outputs) do
    local out = p(ir.load(o.target, o.row))
    lines[#lines + 1] = string.format("%s%s %s acc%d[c];", indent(d1 + 1), out, o.assign and "=" or "+=", i - 1)
  end
  lines[#lines + 1] = indent(d1) .. "}"
  lines[#lines + 1] = indent(depth) .. "}"
  if s.when then lines[#lines + 1] = indent(1) .. "}" end
end

-- An op of one row loop whose stages are maps, lets and stores only (no reductions: GELU):
-- its rows are a function compiled once per instruction set (rowwise_cloned_function.c.tmpl).
local function elementwise(op)
  if #op.loops ~= 1 or #op.prelude > 0 or #op.colsums > 0 then return false end
  for _, s in ipairs(op.row_stages) do
    if s.stage == "reduce" then return false end
  end
  return true
end

-- style "train": the functions of the training kernels (no kernel set argument, extern);
-- "extern": the same for an op of gen/ops.lua (the fused ops beside a kernel set), "runtime"
-- for one of gen/ops_runtime.lua (beside the training kernels).
local templates = {
  vit = { cloned = "rowwise_cloned_function.c.tmpl", plain = "rowwise_function.c.tmpl" },
  train = { cloned = "train_cloned_function.c.tmpl", plain = "train_function.c.tmpl", source = "gen/ops_train.lua" },
  extern = { cloned = "train_cloned_function.c.tmpl", plain = "train_function.c.tmpl", source = "gen/ops.lua" },
  runtime = { cloned = "train_cloned_function.c.tmpl", plain = "train_function.c.tmpl", source = "gen/ops_runtime.lua" },
}

local function cloned(op, style)
  local lines = {}
  row_body(op, lines, 2)
  local body = table.concat(lines, "\n")
  local args, unused = {}, {}
  for _, p in ipairs(op.params) do
    args[#args + 1] = p[1]
    if (p[2] == "long" or p[2] == "real" or p[2] == "double") and not lower_c.names(body, p[1]) then
      unused[#unused + 1] = "    (void)" .. p[1] .. ";\n"
    end
  end
  return template.fill(templates[style].cloned, {
    SOURCE = templates[style].source,
    NAME = op.name,
    MATH = lower_c.math(op, "     "),
    PARAMS = lower_c.params(op),
    ARGS = table.concat(args, ", "),
    UNUSED = table.concat(unused),
    ROW = op.loops[1][1],
    EXTENT = printer(op)(op.loops[1][2]),
    BODY = table.concat(lines, "\n") .. "\n",
  })
end

-- The C function of op for the set with compile-time dims {WIDTH=, HIDDEN=, HEADS=, HEAD_DIM=},
-- or dims nil for the generic set (the names stand for values read at run time from the set);
-- style "vit" (default: a static function of a kernel set, first argument the set) or "train".
function lower_c.op(op, dims, style)
  style = style or "vit"
  if elementwise(op) then return cloned(op, style) end
  local lines = {}
  lower_c.prelude(op, lines, printer(op))
  row_stages(op, lines)
  for _, s in ipairs(op.colsums) do colsum(op, s, lines, dims) end
  return template.fill(templates[style].plain, {
    SOURCE = templates[style].source,
    NAME = op.name,
    MATH = lower_c.math(op, "     "),
    PARAMS = lower_c.params(op),
    BODY = table.concat(lines, "\n") .. "\n",
  })
end

return lower_c
