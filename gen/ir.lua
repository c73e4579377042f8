-- gen/ir.lua: the small IR of row-wise ops, lowered to C (gen/lower_c.lua) and CUDA
-- (gen/lower_cuda.lua).
--
-- An op works on independent rows of a compile-time length (WIDTH, HIDDEN, ...). Its row
-- domain is a nest of loops over runtime extents ({"b", "batch"}, {"t", "T"}); each row is
-- processed by a sequence of stages:
--   reduce(name, e)   name = sum over the row's columns i of e            (a per-row scalar)
--   let(name, e)      name = e, a per-row scalar (e must not depend on the column i)
--   store(t, e, opt)  t[row] = e, a per-row scalar output
--   map(t, e, opt)    t[row, i] = e (or += with opt.accumulate) for every column i;
--                     opt.row overrides the output row, opt.where skips rows
-- and, after the row stages, column reductions across rows (parameter gradients):
--   colsum{ over = loops, keep = loops, when = e, lets = {...}, where = e,
--           outputs = { {t, e, row = e}, ... } }
--     for every kept index and column i: t[row, i] += sum over the `over` loops of e.
--     Lowerings must make them deterministic: one thread owns a column and adds in a fixed order.
--
-- Expressions are trees built with Lua operators (+ - * / and unary -) and the helpers
-- below. A Lua integer becomes an integer literal (index arithmetic), a Lua float a `real`
-- literal; write 0.5, never 1/2.
local ir = {}

local Node = {}
Node.__index = Node

local function node(t) return setmetatable(t, Node) end

local function lift(v)
  if getmetatable(v) == Node then return v end
  if type(v) == "number" then
    if math.type(v) == "integer" then return node({ kind = "int", value = v }) end
    return node({ kind = "real", value = v })
  end
  if type(v) == "string" then return node({ kind = "var", name = v }) end
  error("ir: cannot make an expression of " .. type(v), 3)
end
ir.lift = lift

local function binary(op)
  return function(a, b) return node({ kind = "bin", op = op, a = lift(a), b = lift(b) }) end
end
Node.__add = binary("+")
Node.__sub = binary("-")
Node.__mul = binary("*")
Node.__div = binary("/")
Node.__unm = function(a) return node({ kind = "neg", a = a }) end

-- A scalar: a loop variable, a per-row let, a compile-time constant (WIDTH) or a runtime
-- parameter of the op (rows, patches).
function ir.var(name) return node({ kind = "var", name = name }) end
function ir.int(v) return node({ kind = "int", value = v }) end
function ir.real(v) return node({ kind = "real", value = v + 0.0 }) end
-- A double literal (for the double-precision lets and sums of the training ops).
function ir.double(v) return node({ kind = "double", value = v + 0.0 }) end

-- Element of tensor `name`: at (row, column i) for row tensors, [i] for vectors, [row] for
-- per-row tensors. `row` defaults to the op's row expression.
function ir.load(name, row) return node({ kind = "load", name = name, row = row and lift(row) }) end

-- Math functions of real arguments: "exp", "sqrt", "erf", "fma" (real_* in C, *f in CUDA);
-- of double arguments: "log", "dsqrt"; conversions: "to_real" (rounds), "to_double" (exact).
function ir.call(fn, ...)
  local args = {}
  for i, a in ipairs({ ... }) do args[i] = lift(a) end
  return node({ kind = "call", fn = fn, args = args })
end

function ir.select(cond, a, b) return node({ kind = "select", cond = lift(cond), a = lift(a), b = lift(b) }) end
function ir.cmp(op, a, b) return node({ kind = "cmp", op = op, a = lift(a), b = lift(b) }) end
function ir.both(a, b) return node({ kind = "and", a = lift(a), b = lift(b) }) end
-- True when the optional tensor `name` was given (a non-NULL pointer).
function ir.present(name) return node({ kind = "present", name = name }) end

-- Tensor declarations: the shape of each pointer parameter of an op.
--   rows(ld)     a matrix with rows ld elements apart (ld: constant or parameter name)
--   vector()     a parameter vector indexed by the column i
--   per_row()    one value per row
--   span(base)   the row's elements start at element `base` (an expression of the row:
--                chunks of a flat buffer, e.g. the tensors of a parameter buffer)
-- and the element type (optional, default "real"):
--   "real"       float (fp32 build) or double (fp64 build) in C, float in CUDA
--   "double"     double in both (the sums and scalings of the losses and the clipping norm)
--   "bf16"       the upper 16 bits of a float, stored as uint16_t / unsigned short; stores round
--                to nearest even on the float's bits (NaN stays NaN): poa_bf16_from_float of
--                runtime/bf16.h in C, the same bit operations in CUDA, so the bits agree
--   "long"       a table of indices (const long *)
local element_types = { real = true, double = true, bf16 = true, long = true }
local function typed(t, type)
  t.type = type or "real"
  assert(element_types[t.type], "ir: unknown element type " .. tostring(type))
  return t
end
function ir.rows(ld, type) return typed({ shape = "rows", ld = ld }, type) end
function ir.vector(type) return typed({ shape = "vector" }, type) end
function ir.per_row(type) return typed({ shape = "per_row" }, type) end
function ir.span(base, type) return typed({ shape = "span", base = lift(base) }, type) end

-- Stages. reduce's opt: type = "double" (the accumulator; default real), combine = "max"
-- (default "+"; a max starts at -infinity). let's ctype: "int", "long", "double" or nil (real;
-- int for conditions).
function ir.reduce(name, e, opt)
  opt = opt or {}
  return { stage = "reduce", name = name, expr = lift(e), type = opt.type or "real",
           combine = opt.combine or "+" }
end
function ir.let(name, e, ctype) return { stage = "let", name = name, expr = lift(e), ctype = ctype } end
function ir.store(t, e, opt)
  opt = opt or {}
  return { stage = "store", target = t, expr = lift(e), row = opt.row and lift(opt.row) }
end
function ir.map(t, e, opt)
  opt = opt or {}
  return { stage = "map", target = t, expr = lift(e), accumulate = opt.accumulate or false,
           row = opt.row and lift(opt.row), where = opt.where and lift(opt.where) }
end
function ir.colsum(spec)
  local outputs = {}
  for i, o in ipairs(spec.outputs) do
    outputs[i] = { target = o[1], expr = lift(o[2]), row = o.row and lift(o.row), assign = o.assign }
  end
  return { stage = "colsum", over = spec.over, keep = spec.keep or {}, lets = spec.lets or {},
           where = spec.where and lift(spec.where), when = spec.when and lift(spec.when),
           outputs = outputs }
end

-- op{ name, math, params, tensors, length, loops, row, prelude, stages }:
--   params   the C parameters after `k`, in order: {name, kind} with kind one of
--            "out" (real *), "in" (const real *), "mask" (const unsigned char *), "long",
--            "real" or "double" (scalars); a pointer's element type is its tensor's
--   tensors  name -> ir.rows / ir.vector / ir.per_row / ir.span, for every pointer parameter
--   optional names of pointer parameters that may be NULL (tested with ir.present)
--   length   the row length: a compile-time constant name (e.g. "WIDTH"), or an expression
--            evaluated per row after the row's lets (a runtime length: a parameter, a let)
--   exact    CUDA must not contract a * b + c into an fma (multiplications lower to
--            __fmul_rn), so that C (-std=c11: no contraction) and CUDA give the same bits
--   loops    the row domain, outermost first: {var, extent expression}
--   row      the default row expression of row tensors (e.g. b * T + t)
--   prelude  runtime scalars derived from parameters: {name, expression}
function ir.op(spec)
  assert(spec.name and spec.math and spec.params and spec.tensors and spec.length, "ir.op: incomplete")
  if type(spec.length) ~= "string" then spec.length = lift(spec.length) end
  spec.loops = spec.loops or { { "r", "rows" } }
  for _, l in ipairs(spec.loops) do l[2] = lift(l[2]) end
  spec.row = lift(spec.row or spec.loops[1][1])
  spec.prelude = spec.prelude or {}
  for _, p in ipairs(spec.prelude) do p[2] = lift(p[2]) end
  spec.optional = spec.optional or {}
  local row_stages, colsums = {}, {}
  for _, s in ipairs(spec.stages) do
    if s.stage == "colsum" then
      for _, l in ipairs(s.over) do l[2] = lift(l[2]) end
      for _, l in ipairs(s.keep) do l[2] = lift(l[2]) end
      for _, l in ipairs(s.lets) do l[2] = lift(l[2]) end
      colsums[#colsums + 1] = s
    else
      assert(#colsums == 0, spec.name .. ": row stages must come before column reductions")
      row_stages[#row_stages + 1] = s
    end
  end
  for _, p in ipairs(spec.params) do
    if p[2] == "out" or p[2] == "in" or p[2] == "mask" then
      assert(spec.tensors[p[1]], spec.name .. ": no shape for " .. p[1])
    end
  end
  spec.row_stages, spec.colsums = row_stages, colsums
  return spec
end

-- Expression printing, shared by the lowerings. `target` supplies:
--   real(v)       a real literal        call(fn, args)  a math function call
--   double(v)     a double literal      present(name)   the non-NULL test
--   mul(a, b)     optional: a product (CUDA's exact ops: __fmul_rn)
local precedence = { ["and"] = 1, cmp = 2, ["+"] = 3, ["-"] = 3, ["*"] = 4, ["/"] = 4 }

local function prec_of(e)
  if e.kind == "bin" then return precedence[e.op] end
  if e.kind == "cmp" then return precedence.cmp end
  if e.kind == "and" then return precedence["and"] end
  if e.kind == "select" then return 0 end
  return 10
end

function ir.print(e, target, ctx)
  local function p(x) return ir.print(x, target, ctx) end
  local function wrap(child, min, strict)
    local s = p(child)
    local cp = prec_of(child)
    if cp < min or (strict and cp == min) then return "(" .. s .. ")" end
    return s
  end
  local k = e.kind
  if k == "int" then return tostring(e.value)
  elseif k == "real" then return target.real(e.value)
  elseif k == "double" then return ir.format_real(e.value)
  elseif k == "var" then return e.name
  elseif k == "bin" then
    local pr = precedence[e.op]
    if e.op == "*" and target.mul and ctx.op.exact then return target.mul(p(e.a), p(e.b)) end
    -- a right operand of equal precedence keeps its parentheses: float a + (b + c) differs
    -- from (a + b) + c.
    return wrap(e.a, pr) .. " " .. e.op .. " " .. wrap(e.b, pr, true)
  elseif k == "neg" then return "-" .. wrap(e.a, 10)
  elseif k == "cmp" then return wrap(e.a, 3) .. " " .. e.op .. " " .. wrap(e.b, 3)
  elseif k == "and" then return wrap(e.a, 1) .. " && " .. wrap(e.b, 2)
  elseif k == "select" then return wrap(e.cond, 1) .. " ? " .. wrap(e.a, 1) .. " : " .. wrap(e.b, 1)
  elseif k == "call" then
    local args = {}
    for i, a in ipairs(e.args) do args[i] = p(a) end
    return target.call(e.fn, table.concat(args, ", "))
  elseif k == "present" then return target.present(e.name)
  elseif k == "load" then
    local t = ctx.op.tensors[e.name]
    assert(t, ctx.op.name .. ": load of undeclared tensor " .. e.name)
    local row = e.row or ctx.row
    if t.shape == "vector" then return e.name .. "[" .. ctx.column .. "]" end
    if t.shape == "per_row" then return e.name .. "[" .. p(row) .. "]" end
    if t.shape == "span" then return e.name .. "[" .. p(t.base) .. " + " .. ctx.column .. "]" end
    local r = p(row)
    if prec_of(row) < 4 then r = "(" .. r .. ")" end
    return e.name .. "[" .. r .. " * " .. t.ld .. " + " .. ctx.column .. "]"
  end
  error("ir.print: unknown node " .. tostring(k))
end

-- Does e depend on the column index (a row or vector load)?
function ir.uses_column(e, op)
  if e.kind == "load" then
    local t = op.tensors[e.name]
    if t.shape ~= "per_row" then return true end
    return e.row ~= nil and ir.uses_column(e.row, op)
  end
  for _, key in ipairs({ "a", "b", "cond", "row" }) do
    if e[key] and ir.uses_column(e[key], op) then return true end
  end
  for _, a in ipairs(e.args or {}) do if ir.uses_column(a, op) then return true end end
  return false
end

-- The C / CUDA type of a scalar let: an int for conditions, else the real type.
function ir.is_condition(e)
  return e.kind == "cmp" or e.kind == "and" or e.kind == "present"
end

-- A real literal: C needs (real) casts so one file compiles in fp32 and fp64.
function ir.format_real(v)
  local s
  for digits = 15, 17 do  -- the shortest form that reads back as the same double
    s = string.format("%." .. digits .. "g", v)
    if tonumber(s) == v then break end
  end
  if not s:find("[%.eEn]") then s = s .. ".0" end
  return s
end

return ir
