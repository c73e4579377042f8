#!/usr/bin/env lua5.4
-- configure.lua: find the toolchain and libraries, then write build.ninja.
--   lua5.4 configure.lua          (CC, CFLAGS, CUDA_HOME are read from the environment)
--   lua5.4 configure.lua --prefix=/opt/poa
--                                 where `ninja install` puts bin/poa, share/poa/recipes/*.lua and
--                                 share/doc/poa/README.md (default /usr/local; DESTDIR=... stages)
--   lua5.4 configure.lua --static-deps
--                                 the device bundle: build-device.ninja building into build-device/
--                                 (`ninja -f build-device.ninja`), Lua, TurboJPEG, OpenBLAS,
--                                 libgfortran and libgomp linked statically, so that the
--                                 binaries run on a machine without those libraries
--                                 (tools/device_check).
-- Sources are found by their place: runtime/*.c make libpoa (and libpoa_f64, the fp64
-- build for gradient checks), runtime/main.c is the `poa` CLI, tests/c/test_*.c and
-- tests/c/f64_*.c are test programs, bench/*.c are benchmarks. The generator (gen/emit.lua)
-- emits the kernels of every recipe in recipes/ and tests/recipes/ into build/gen/;
-- tools/embed.lua turns gen/*.lua, models/*.lua and templates/* into build/lua_sources.c, the
-- Lua that poa carries (runtime/lua_sources.h), so that the binary runs from anywhere.
package.path = "./?.lua;" .. package.path

local function shell(command)
  local f = io.popen(command .. " 2>/dev/null")
  local out = f:read("a")
  local ok = f:close()
  return ok and (out:gsub("%s+$", "")) or nil
end

local function glob(pattern)
  local list = {}
  local out = shell("ls -1 " .. pattern)
  for line in (out or ""):gmatch("[^\n]+") do list[#list + 1] = line end
  table.sort(list)
  return list
end

-- pkg-config flags of a library, or exit naming the Debian package; search_path is an extra
-- PKG_CONFIG_PATH (e.g. one OpenBLAS variant's directory).
local function need_pkg(name, package, search_path)
  local env = search_path and ("PKG_CONFIG_PATH=" .. search_path .. " ") or ""
  local flags = shell(env .. "pkg-config --cflags --libs " .. name)
  if not flags then
    io.stderr:write(string.format("configure.lua: %s not found (install %s, or run ./setup)\n",
                                  name, package))
    os.exit(1)
  end
  return flags
end

local function basename(path) return (path:gsub("^.*/", ""):gsub("%.[^.]*$", "")) end

local static_deps, prefix = false, "/usr/local"
for _, a in ipairs(arg) do
  if a == "--static-deps" then static_deps = true
  elseif a:match("^%-%-prefix=/") then prefix = a:sub(10):gsub("/+$", "")
  else
    io.stderr:write("configure.lua: unknown option " .. a .. " (known: --static-deps, --prefix=/ABSOLUTE/DIR)\n")
    os.exit(2)
  end
end
if prefix:find("[%s'\"$\\]") then
  io.stderr:write("configure.lua: --prefix=" .. prefix .. ": no spaces, quotes, $ or \\ please\n")
  os.exit(2)
end
local build = static_deps and "build-device" or "build"
local ninja_file = static_deps and "build-device.ninja" or "build.ninja"

local cc = os.getenv("CC") or "cc"
local cuda = os.getenv("CUDA_HOME") or "/usr/local/cuda"
local has_nvrtc = io.open(cuda .. "/include/nvrtc.h") ~= nil

local lua_flags = need_pkg("lua5.4", "liblua5.4-dev")
-- OpenBLAS's OpenMP build shares one thread pool with our OpenMP kernels; the pthread build's
-- spinning threads and OpenMP's starve each other (measured: 3x slower steps on 2 cores).
local openmp_blas = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
local blas_flags = need_pkg("openblas", "libopenblas-openmp-dev", openmp_blas .. "/pkgconfig")
if not blas_flags:match("openblas%-openmp") then
  io.stderr:write("configure.lua: OpenBLAS's OpenMP build not found (install libopenblas-openmp-dev)\n")
  os.exit(1)
end
blas_flags = blas_flags .. " -Wl,-rpath," .. openmp_blas
local jpeg_flags = need_pkg("libturbojpeg", "libturbojpeg0-dev")
-- cairo draws the evaluation figures (SVG and PNG, fonts through fontconfig). The
-- --static-deps device build leaves it out (runtime/plot.c then says it has no plots).
local cairo_flags = static_deps and "" or need_pkg("cairo", "libcairo2-dev")
local function cflags_of(flags)
  local out = {}
  for w in flags:gmatch("%S+") do if not w:match("^%-[lL]") and not w:match("^%-Wl,") then out[#out + 1] = w end end
  return table.concat(out, " ")
end
local function libs_of(flags)
  local out = {}
  for w in flags:gmatch("%S+") do if w:match("^%-[lL]") or w:match("^%-Wl,") then out[#out + 1] = w end end
  return table.concat(out, " ")
end

-- --static-deps: every -lNAME of these libraries (and their own needs) from its .a file;
-- libc, libm, libdl, libpthread and zlib stay shared (present on any Linux machine).
local function static_libs(flags)
  local out = {}
  for word in flags:gmatch("%S+") do
    local name = word:match("^%-l(.+)$")
    if not name then out[#out + 1] = word
    elseif name ~= "m" and name ~= "pthread" and name ~= "dl" and name ~= "gomp" then
      out[#out + 1] = "-Wl,-Bstatic -l" .. name .. " -Wl,-Bdynamic"
    end
  end
  return table.concat(out, " ")
end
if static_deps then
  local gcc_dir = shell(cc .. " -print-file-name=libgomp.a")
  for _, path in ipairs({ "/usr/lib/x86_64-linux-gnu/liblua5.4.a", openmp_blas .. "/libopenblas.a",
                          "/usr/lib/x86_64-linux-gnu/libturbojpeg.a", gcc_dir }) do
    if not io.open(path) then
      io.stderr:write("configure.lua: --static-deps needs " .. path ..
                      " (liblua5.4-dev, libopenblas-openmp-dev, libturbojpeg0-dev, gcc)\n")
      os.exit(1)
    end
  end
  -- OpenBLAS's static library needs libgfortran (and libquadmath) and libgomp.
  blas_flags = need_pkg("openblas --static", "libopenblas-openmp-dev", openmp_blas .. "/pkgconfig")
  lua_flags, blas_flags, jpeg_flags = static_libs(lua_flags), static_libs(blas_flags), static_libs(jpeg_flags)
  blas_flags = blas_flags .. " -Wl,-Bstatic -lquadmath -Wl,-Bdynamic"
end

-- The flags of every C file, the generated kernel sets included; runtime/kernels_compiled.c
-- compiles the set of a width no recipe has with the same compiler and these flags.
local kernel_cflags = "-std=c11 -O2 -g -march=x86-64-v2 -fopenmp -Wall -Wextra -Werror -D_GNU_SOURCE"
  .. (os.getenv("CFLAGS") and (" " .. os.getenv("CFLAGS")) or "")
local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local function c_string(s) return '"' .. s:gsub('[\\"]', "\\%0") .. '"' end
local kernel_defines = "-DPOA_KERNEL_CC=" .. shell_quote(c_string(cc)) .. " -DPOA_KERNEL_CFLAGS="
  .. shell_quote(c_string(kernel_cflags))
local cflags = table.concat({
  kernel_cflags,
  "-Iruntime -I" .. build .. "/gen",
  cflags_of(lua_flags), cflags_of(blas_flags), cflags_of(jpeg_flags), cflags_of(cairo_flags),
  static_deps and "" or "-DPOA_HAVE_CAIRO=1",
  has_nvrtc and ("-I" .. cuda .. "/include -DPOA_HAVE_NVRTC=1") or "",
}, " ")
local libs = table.concat({
  libs_of(lua_flags), libs_of(blas_flags), libs_of(jpeg_flags), libs_of(cairo_flags),
  static_deps and "-Wl,-Bstatic -lgomp -Wl,-Bdynamic -lz -lm -ldl -lpthread"
    or "-lz -lm -ldl -lpthread -fopenmp",
}, " ")
-- What `poa --version` says of this build (tools/version.lua adds git describe).
local build_options = string.format("%s %s, -O2 -march=x86-64-v2 -fopenmp%s; OpenBLAS (OpenMP), TurboJPEG, "
  .. "Lua 5.4%s; CUDA headers %s (the driver, NVRTC, cuBLASLt and NCCL are loaded at run time)",
  cc, shell(cc .. " -dumpfullversion") or "", os.getenv("CFLAGS") and (" " .. os.getenv("CFLAGS")) or "",
  static_deps and ", linked statically" or "", has_nvrtc and ("found in " .. cuda .. "/include") or "not found")
build_options = build_options:gsub("[^%w%s%.,;:/()=_+-]", "?")
local nvrtc_libs = has_nvrtc and ("-L" .. cuda .. "/lib64 -lnvrtc -Wl,-rpath," .. cuda .. "/lib64") or ""

local recipes = {}
for _, p in ipairs(glob("recipes/*.lua")) do recipes[#recipes + 1] = p end
for _, p in ipairs(glob("tests/recipes/*.lua")) do recipes[#recipes + 1] = p end

local emit = require("gen.emit")
local generated = emit.outputs(recipes, build .. "/gen")

local out = {}
local function w(s) out[#out + 1] = s end
w("# build.ninja: written by configure.lua; edit configure.lua instead.")
w("ninja_required_version = 1.10")
w("builddir = " .. build)
w("cc = " .. cc)
w("cflags = " .. cflags)
w("libs = " .. libs)
w("")
w("rule cc")
w("  command = $cc -MMD -MF $out.d $cflags $extra -c $in -o $out")
w("  depfile = $out.d")
w("  deps = gcc")
w("  description = CC $out")
w("rule ar")
w("  command = rm -f $out && ar crs $out $in")
w("  description = AR $out")
w("rule link")
w("  command = $cc $in -o $out $libs $extra")
w("  description = LINK $out")
w("rule gen")
w("  command = lua5.4 gen/emit.lua " .. build .. "/gen $recipes")
w("  description = GEN " .. build .. "/gen")
w("rule embed")
w("  command = lua5.4 tools/embed.lua $out $in")
w("  description = EMBED $out")
-- ninja install: poa, the shipped recipes and the README under $DESTDIR$prefix.
w("prefix = " .. prefix)
w("rule install")
w("  command = install -d $$DESTDIR$prefix/bin $$DESTDIR$prefix/share/poa/recipes $$DESTDIR$prefix/share/doc/poa"
  .. " && install -m 755 $poa $$DESTDIR$prefix/bin/poa"
  .. " && install -m 644 $recipes $$DESTDIR$prefix/share/poa/recipes"
  .. " && install -m 644 $docs $$DESTDIR$prefix/share/doc/poa"
  .. " && echo \"installed $$DESTDIR$prefix/bin/poa, $$DESTDIR$prefix/share/poa/recipes, $$DESTDIR$prefix/share/doc/poa\"")
w("  description = INSTALL $prefix")
w("rule version")
w("  command = lua5.4 tools/version.lua $out '" .. build_options .. "'")
w("  restat = 1")
w("  description = VERSION $out")
w("rule configure")
w("  command = lua5.4 configure.lua" .. (static_deps and " --static-deps" or "")
  .. (prefix ~= "/usr/local" and (" --prefix=" .. prefix) or ""))
w("  generator = 1")
w("  description = CONFIGURE")
w("")

local gen_inputs = table.concat(glob("gen/*.lua"), " ") .. " " .. table.concat(glob("templates/*"), " ")
  .. " " .. table.concat(glob("models/*.lua"), " ") .. " " .. table.concat(recipes, " ")
local gen_outputs = {}
for _, kind in ipairs({ "c", "cu", "text" }) do
  for _, f in ipairs(generated[kind]) do gen_outputs[#gen_outputs + 1] = f end
end
w("build " .. table.concat(gen_outputs, " ") .. ": gen " .. gen_inputs)
w("  recipes = " .. table.concat(recipes, " "))
-- The folders as inputs too: a file added to or removed from one of them configures again.
w("build " .. ninja_file .. ": configure configure.lua gen/emit.lua | " .. table.concat(recipes, " ")
  .. " gen models templates recipes tests/recipes")
local embedded = glob("gen/*.lua")
for _, pattern in ipairs({ "models/*.lua", "templates/*" }) do
  for _, p in ipairs(glob(pattern)) do embedded[#embedded + 1] = p end
end
-- The runtime files an exported program (`poa export --what c`) carries as they are
-- (gen/export_c.lua's list: self-contained C with no dependency on the rest of the runtime).
for _, name in ipairs(require("gen.export_c").copied) do embedded[#embedded + 1] = "runtime/" .. name end
-- and the header a kernel set compiled at run time includes beside real.h and fast_math.h
-- (runtime/kernels_compiled.c)
embedded[#embedded + 1] = "runtime/kernels.h"
local lua_sources = build .. "/lua_sources.c"
w("build " .. lua_sources .. ": embed " .. table.concat(embedded, " ") .. " | tools/embed.lua")
w("")

-- libpoa (fp32) and libpoa_f64 (fp64) from the runtime and the generated C kernels.
local library_sources = {}
for _, s in ipairs(glob("runtime/*.c")) do
  if s ~= "runtime/main.c" then library_sources[#library_sources + 1] = s end
end
for _, s in ipairs(generated.c) do library_sources[#library_sources + 1] = s end
library_sources[#library_sources + 1] = lua_sources
for _, variant in ipairs({ { "", "" }, { "_f64", "-DPOA_FP64" } }) do
  local suffix, define = variant[1], variant[2]
  local objects = {}
  for _, s in ipairs(library_sources) do
    local o = build .. "/obj" .. suffix .. "/" .. s:gsub("^" .. build:gsub("%-", "%%-") .. "/", ""):gsub("%.c$", ".o")
    w("build " .. o .. ": cc " .. s .. " || " .. gen_outputs[1])
    local extra = define .. (s == "runtime/kernels_compiled.c" and (" " .. kernel_defines) or "")
    if extra ~= "" then w("  extra = " .. extra) end
    objects[#objects + 1] = o
  end
  w("build " .. build .. "/libpoa" .. suffix .. ".a: ar " .. table.concat(objects, " "))
end

local programs = { build .. "/poa" }
w("build " .. build .. "/obj/runtime/main.o: cc runtime/main.c || " .. gen_outputs[1])
-- build/version.c is looked at on every build (git describe) and rewritten only when it changes.
w("build " .. build .. "/version.c: version | tools/version.lua " .. build .. "/version_check")
w("build " .. build .. "/version_check: phony")
w("build " .. build .. "/obj/version.o: cc " .. build .. "/version.c")
w("build " .. build .. "/poa: link " .. build .. "/obj/runtime/main.o " .. build .. "/obj/version.o " .. build .. "/libpoa.a")
for _, pattern in ipairs({ "tests/c/test_*.c", "tests/c/f64_*.c", "bench/*.c" }) do
  for _, s in ipairs(glob(pattern)) do
    local f64 = s:match("/f64_") ~= nil
    local name = basename(s)
    local dir = build .. (s:match("^bench/") and "/bench/" or "/tests/")
    local o = build .. "/obj" .. (f64 and "_f64/" or "/") .. s:gsub("%.c$", ".o")
    w("build " .. o .. ": cc " .. s .. " || " .. gen_outputs[1])
    if f64 then w("  extra = -DPOA_FP64") end
    w("build " .. dir .. name .. ": link " .. o .. " " .. build .. "/libpoa" .. (f64 and "_f64" or "") .. ".a")
    if name:match("nvrtc") then w("  extra = " .. nvrtc_libs) end
    programs[#programs + 1] = dir .. name
  end
end
w("")
w("build all: phony " .. table.concat(programs, " "))
local shipped = glob("recipes/*.lua")
w("build install: install " .. build .. "/poa " .. table.concat(shipped, " ") .. " README.md LICENSE")
w("  poa = " .. build .. "/poa")
w("  recipes = " .. table.concat(shipped, " "))
w("  docs = README.md LICENSE")
w("default all")

local f = assert(io.open(ninja_file, "w"))
f:write(table.concat(out, "\n"), "\n")
f:close()
print(string.format("configure.lua: " .. ninja_file .. ": %d recipes, %d generated C files, %d CUDA files; nvrtc %s",
  #recipes, #generated.c, #generated.cu, has_nvrtc and "found" or "not found"))
