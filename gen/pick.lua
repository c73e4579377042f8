-- gen/pick.lua: `poa pick <recipe> [--knn knn.csv] --max-params N | --max-gflops F |
-- --max-latency MS`: the members of a family that fit a budget (gen/space.lua's parameter and
-- FLOP counts, or latencies measured by the caller), with their k-NN top-1 from a table of
-- `poa knn` (knn.csv: member,width,depth,params,gflops,k,top1,top5,features; the "trained"
-- rows), the Pareto front of the fitting members marked: no other fitting member is at least
-- as accurate at no more cost (the budget's measure), and better in one of the two.
local space = require("gen.space")

local pick = {}

-- The rows of knn.csv for the trained members at k: {["WxD"] = top1}; errors name the file,
-- the line and the field.
function pick.read_knn(path, k)
  local f, err = io.open(path, "r")
  if not f then error(string.format("--knn %s: cannot read (%s)", path, err), 0) end
  local header = f:read("l")
  local want = "member,width,depth,params,gflops,k,top1,top5,features"
  if header ~= want then
    f:close()
    error(string.format("%s: line 1 is '%s', not the header of poa knn's table (%s)", path, tostring(header), want), 0)
  end
  local top1, ks, line_number = {}, {}, 1
  for line in f:lines() do
    line_number = line_number + 1
    local fields = {}
    for field in (line .. ","):gmatch("([^,]*),") do fields[#fields + 1] = field end
    local width, depth, row_k, acc = tonumber(fields[2]), tonumber(fields[3]), tonumber(fields[6]), tonumber(fields[7])
    if #fields ~= 9 or not width or not depth or not row_k or not acc then
      f:close()
      error(string.format("%s: line %d: '%s' is not a row of 9 fields with numbers in width, depth, k, top1",
        path, line_number, line), 0)
    end
    if fields[9] == "trained" then
      ks[row_k] = true
      if row_k == k then top1[width .. "x" .. depth] = acc end
    end
  end
  f:close()
  if not next(top1) then
    local have = {}
    for kk in pairs(ks) do have[#have + 1] = tostring(kk) end
    table.sort(have, function(a, b) return tonumber(a) < tonumber(b) end)
    error(string.format("%s: no trained member at k = %d (k in the table: %s)", path, k,
      #have > 0 and table.concat(have, ", ") or "none"), 0)
  end
  return top1
end

-- The members as "WxD" words, for the caller to measure.
function pick.member_list(r)
  local out = {}
  for _, m in ipairs(space.members(r)) do out[#out + 1] = m.width .. "x" .. m.depth end
  return table.concat(out, " ")
end

local measures = {
  params = { title = "params (M)", of = function(m) return m.params end, show = function(v) return string.format("%.2f", v / 1e6) end },
  gflops = { title = "GFLOPs", of = function(m) return m.gflops end, show = function(v) return string.format("%.3f", v) end },
  latency = { title = "latency (ms)", of = function(m, o) return o.latency[m.width .. "x" .. m.depth] end,
              show = function(v) return string.format("%.3f", v) end },
}

-- opts = { budget = "params" | "gflops" | "latency", limit = number, knn = path or nil, k = 20,
--          latency = {["WxD"] = ms} (budget latency), latency_what = text }
function pick.text(r, opts)
  local measure = assert(measures[opts.budget], "pick: unknown budget " .. tostring(opts.budget))
  local top1 = opts.knn and pick.read_knn(opts.knn, opts.k) or nil
  local fit = {}
  for _, m in ipairs(space.members(r)) do
    m.cost = measure.of(m, opts)
    m.top1 = top1 and top1[m.width .. "x" .. m.depth]
    if m.cost and m.cost <= opts.limit then fit[#fit + 1] = m end
  end
  table.sort(fit, function(a, b)
    if a.cost ~= b.cost then return a.cost < b.cost end
    return a.width * 1000 + a.depth < b.width * 1000 + b.depth
  end)
  for _, m in ipairs(fit) do
    m.front = m.top1 ~= nil
    for _, o in ipairs(fit) do
      if m.front and o ~= m and o.top1 and o.cost <= m.cost and o.top1 >= m.top1 and (o.cost < m.cost or o.top1 > m.top1) then
        m.front = false
      end
    end
  end
  local limit_text = opts.budget == "params" and string.format("%.4g M parameters", opts.limit / 1e6)
    or opts.budget == "gflops" and string.format("%.4g GFLOPs", opts.limit) or string.format("%.4g ms", opts.limit)
  local lines = { string.format("%s: %d of %d members fit %s%s", r.name, #fit, #space.members(r), limit_text,
    opts.latency_what and (" (" .. opts.latency_what .. ")") or "") }
  local head = string.format("%6s %6s %11s %9s", "width", "depth", "params (M)", "GFLOPs")
  if opts.budget == "latency" then head = head .. string.format(" %13s", measure.title) end
  if top1 then head = head .. string.format(" %9s", "top-1 (%)") end
  lines[#lines + 1] = head .. "  front  name"
  for _, m in ipairs(fit) do
    local row = string.format("%6d %6d %11.2f %9.3f", m.width, m.depth, m.params / 1e6, m.gflops)
    if opts.budget == "latency" then row = row .. string.format(" %13s", measure.show(m.cost)) end
    if top1 then row = row .. string.format(" %9s", m.top1 and string.format("%.2f", m.top1) or "-") end
    row = row .. string.format("  %-5s  %s", m.front and "*" or "", m.name or "")
    lines[#lines + 1] = (row:gsub("%s+$", ""))
  end
  if #fit == 0 then lines[#lines + 1] = "(none: the smallest member is over the budget)" end
  if top1 then
    lines[#lines + 1] = string.format("* the Pareto front of %s against k-NN top-1 at k = %d (%s); '-': not in the table",
      measure.title, opts.k, opts.knn)
  else
    lines[#lines + 1] = "no --knn table: no accuracy, no Pareto front"
  end
  lines[#lines + 1] = string.format("(params and GFLOPs: gen/space.lua, one %dx%d image)", r.global_crops.size,
    r.global_crops.size)
  return table.concat(lines, "\n") .. "\n"
end

return pick
