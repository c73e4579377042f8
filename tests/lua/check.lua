-- tests/lua/check.lua: the PASS/FAIL protocol of tests/run for Lua tests.
local check = { failed = 0 }

function check.ok(name, condition, detail)
  if condition then
    print("PASS " .. name)
  else
    print("FAIL " .. name .. (detail and (": " .. detail) or ""))
    check.failed = check.failed + 1
  end
  return condition
end

function check.equal(name, got, want)
  return check.ok(name, got == want, string.format("got %s, want %s", tostring(got), tostring(want)))
end

function check.finish()
  os.exit(check.failed == 0 and 0 or 1)
end

return check
