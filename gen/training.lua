-- gen/training.lua: the training sections of a recipe (heads, loss, ibot, teacher, optim,
-- train, data) with the official run's values as defaults (reference §0, vit_ee1200.yaml).
-- training.complete(path, r) fills every missing field and checks the given ones: an unknown
-- field or a value of the wrong type is an error naming the file and field.
local training = {}

training.defaults = {
  heads = {
    prototypes = { 8192, 16384, 32768, 65536 }, -- one head per entry (MDINOHead)
    hidden = 2048,
    bottleneck = 256,
  },
  loss = {
    dino_weight = 1.0,
    koleo_weight = 0.1,      -- paper gamma
    ibot_weight = 1.0,
    lambda = 0.8,            -- intact vs elastic weight (paper lambda)
    student_temp = 0.1,
    distill_temp = 0.1,      -- intact -> elastic same-view targets
    distill_weight = 1.0,    -- the same-view distillation intact -> elastic (paper L_ES2, eq. 10);
                             -- 0 leaves it out (the ablation of the paper's Table 3)
    sinkhorn_iterations = 3,
  },
  ibot = {
    mask_probability = 0.5,
    mask_ratio = { 0.1, 0.5 },
    activate_epochs = 30,    -- iBOT on from activate_epochs * official_epoch_length
  },
  teacher = {
    momentum = 0.992,
    final_momentum = 0.9999,
    warmup_temp = 0.04,
    temp = 0.07,
    warmup_temp_epochs = 30,
  },
  optim = {
    epochs = 346,
    base_lr = 0.004,
    lr_rule = "sqrt_wrt_1024", -- lr = base_lr * sqrt(global batch / 1024); or "none"
    min_lr = 2e-5,
    warmup_epochs = 10,
    weight_decay = 0.04,
    weight_decay_end = 0.4,
    clip_grad = 1.5,          -- per module (backbone, heads)
    freeze_last_layer_epochs = 1,
    patch_embed_lr_mult = 0.2,
    layerwise_decay = 0.9,
    beta1 = 0.9,
    beta2 = 0.999,
    eps = 1e-8,
    iter_num_scale = 0.78,
  },
  train = {
    batch_size = 50,          -- images per micro-batch (per GPU in the official run)
    accumulate = 1,           -- micro-batches per optimizer step (one elastic draw each);
                              -- the global batch (lr rule) = batch_size * accumulate * ranks
    official_epoch_length = 800,
    elastic = true,           -- false: the plain single-network (DINOv2-style) baseline
    draws = "micro_batch",    -- or "step": one elastic member per optimizer step
    seed = 0,
    checkpoint_every = 1000,
    keep_checkpoints = 3,
    log_every = 1,
    threads = 0,              -- 0: every core
    loader_threads = 0,       -- 0: every core
    output = "out",
  },
  data = {
    train = "",               -- an ImageFolder tree (root/<class>/*) or a list file
    val = "",
  },
}

local function fail(path, field, message)
  error(string.format("%s: field '%s': %s", path, field, message), 0)
end

local function merge(path, prefix, given, defaults)
  if type(given) ~= "table" then fail(path, prefix, "expected a table") end
  local out = {}
  for k, v in pairs(defaults) do out[k] = v end
  for k, v in pairs(given) do
    local d = defaults[k]
    local field = prefix .. "." .. tostring(k)
    if d == nil then fail(path, field, "unknown field") end
    if type(v) ~= type(d) then
      fail(path, field, string.format("expected a %s, got %s", type(d), type(v)))
    end
    if type(d) == "table" then
      for i, x in ipairs(v) do
        if type(x) ~= "number" then fail(path, field .. "[" .. i .. "]", "expected a number") end
      end
    end
    out[k] = v
  end
  return out
end

function training.complete(path, r)
  for section, defaults in pairs(training.defaults) do
    r[section] = merge(path, section, r[section] or {}, defaults)
  end
  local t, o, l = r.train, r.optim, r.loss
  if #r.heads.prototypes < 1 or #r.heads.prototypes > 8 then
    fail(path, "heads.prototypes", "expected 1 to 8 heads")
  end
  for _, k in ipairs({ "batch_size", "accumulate", "official_epoch_length",
                       "checkpoint_every", "keep_checkpoints", "log_every" }) do
    if math.type(t[k]) ~= "integer" or t[k] < 1 then fail(path, "train." .. k, "expected a positive integer") end
  end
  if t.draws ~= "micro_batch" and t.draws ~= "step" then
    fail(path, "train.draws", "expected \"micro_batch\" or \"step\"")
  end
  if o.lr_rule ~= "sqrt_wrt_1024" and o.lr_rule ~= "none" then
    fail(path, "optim.lr_rule", "expected \"sqrt_wrt_1024\" or \"none\"")
  end
  if o.iter_num_scale < 0.7 or o.iter_num_scale > 1 then
    fail(path, "optim.iter_num_scale", "expected 0.7 <= s <= 1 (reference §5.3)")
  end
  if l.lambda < 0 or l.lambda > 1 then fail(path, "loss.lambda", "expected 0 <= lambda <= 1") end
  if l.distill_weight < 0 then fail(path, "loss.distill_weight", "expected a weight >= 0") end
  if #r.ibot.mask_ratio ~= 2 then fail(path, "ibot.mask_ratio", "expected {min, max}") end
  if t.elastic then
    local rep = require("gen.space").replicas(r.model)
    if rep.elastic_total == 0 then
      fail(path, "train.elastic", string.format("the family (model.width, model.depth) has no member but the " ..
        "intact %dx%d for the elastic student to draw; train.elastic=false trains it alone",
        rep.intact.width, rep.intact.depth))
    end
  end
  return r
end

return training
