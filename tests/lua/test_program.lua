-- tests/lua/test_program.lua: the forward programs gen/program.lua lowers models/vit.lua's graph
-- to. For members of every shipped ViT recipe and both crops:
--   - the arena is sound: values live at the same step never share an element, at batches 1, 3
--     and 64, offsets are multiples of 16 and inside the arena;
--   - every activation is written before it is read, kernels never write parameters or inputs;
--   - the arena is the best a placement can do here: no larger than the most live at one step;
--   - the GEMM and attention FLOPs at the native size equal gen/space.lua's count (an
--     independent formula): the program runs every layer of the member once;
--   - the parameters it reads are exactly the member's blocks (gen/space.lua's block ids).
package.path = "./?.lua;" .. package.path
local check = require("tests.lua.check")
local program = require("gen.program")
local graph = require("gen.graph")
local recipe = require("gen.recipe")
local space = require("gen.space")

local function written(st)
  local out = {}
  if st.kind == "gemm" then out[st.c.value] = true
  elseif st.kind == "copy" then out[st.dst.value] = true
  else
    for i, a in ipairs(st.args) do
      if a.buffer and graph.kernel_params(st.kernel)[i][2] == "out" then out[a.buffer.value] = true end
    end
  end
  return out
end

local function read(st)
  local list = {}
  if st.kind == "gemm" then list = { st.a, st.b }
  elseif st.kind == "copy" then list = { st.src }
  else
    for i, a in ipairs(st.args) do
      if a.buffer and graph.kernel_params(st.kernel)[i][2] ~= "out" then list[#list + 1] = a.buffer end
    end
  end
  return list
end

local function arena_sound(p, batch)
  local acts = {}
  for _, v in ipairs(p.values) do if v.kind == "act" then acts[#acts + 1] = v end end
  local arena = program.eval(p.arena, batch)
  for i, a in ipairs(acts) do
    local ao, an = program.eval(a.offset, batch), program.eval(a.size, batch)
    if ao % 16 ~= 0 or ao < 0 or ao + an > arena then return false, a.name .. " outside the arena or unaligned" end
    for j = i + 1, #acts do
      local b = acts[j]
      local bo, bn = program.eval(b.offset, batch), program.eval(b.size, batch)
      if a.first <= b.last and b.first <= a.last and ao < bo + bn and bo < ao + an then
        return false, string.format("%s and %s overlap while both live (batch %d)", a.name, b.name, batch)
      end
    end
  end
  return true
end

local function dataflow_sound(p)
  local defined = {}
  for i, st in ipairs(p.steps) do
    for _, o in ipairs(read(st)) do
      local v = p.values[o.value]
      if v.kind == "act" and not defined[o.value] then return false, string.format("step %d reads %s before it is written", i, v.name) end
    end
    for id in pairs(written(st)) do
      if p.values[id].kind ~= "act" then return false, string.format("step %d writes %s", i, p.values[id].name) end
      defined[id] = true
    end
  end
  return true
end

-- The state-dict names the program reads, against the member's blocks.
local function params_match(p, r, width, depth)
  local want = {}
  for _, id in ipairs(space.block_ids(r.model, depth)) do want["blocks." .. id] = true end
  for _, v in ipairs(p.values) do
    if v.kind == "param" then
      local block = v.name:match("^(blocks%.%d+)%.")
      if block and not want[block] then return false, v.name .. " is not a block of the member" end
      if block then want[block] = "seen" end
    end
  end
  for b, seen in pairs(want) do if seen ~= "seen" then return false, b .. " is never read" end end
  return true
end

local recipes = { "recipes/quickstart.lua", "recipes/small_vit.lua", "recipes/vit_l16_ee1200.lua", "tests/recipes/tiny_vit.lua" }
for _, path in ipairs(recipes) do
  local r = recipe.load(path)
  local m = r.model
  local members = { { m.width[1], m.depth[1] }, { m.width[2], m.depth[2] },
                    { m.width[1] + m.width[3], m.depth[2] - 1 } }
  for _, wd in ipairs(members) do
    local width, depth = wd[1], wd[2]
    for _, crop in ipairs({ "global", "local" }) do
      local p = program.vit_forward_of_recipe(r, width, depth, crop)
      local name = string.format("%s %dx%d %s:", r.name, width, depth, crop)
      local ok, why = true, nil
      for _, batch in ipairs({ 1, 3, 64 }) do
        if ok then ok, why = arena_sound(p, batch) end
      end
      check.ok(name .. " values live together never share the arena", ok, why)
      check.ok(name .. " every activation is written before it is read, by the program only", dataflow_sound(p))
      check.ok(name .. " arena no larger than the most live at one step",
        program.eval(p.arena, 4) <= program.max_live(p, 4),
        string.format("%d > %d", program.eval(p.arena, 4), program.max_live(p, 4)))
      check.ok(name .. " reads exactly the member's blocks", params_match(p, r, width, depth))
      if crop == "global" then
        local _, macs = space.flops(m, width, depth, r.global_crops.size)
        check.equal(name .. " FLOPs of one image = gen/space.lua's", program.eval(program.macs(p), 1), macs)
      end
    end
  end
end
check.finish()
