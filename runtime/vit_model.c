/* vit_model.c: the ViT's parameter table (state-dict names and intact shapes),
   initial values, safetensors load/save (the pos-embed resampling matrix: pos_resample.c). */
#include "vit.h"

#include <stdlib.h>
#include <string.h>

#include "random.h"
#include "safetensors.h"

static void add_tensor(poa_vit *m, const char *name, int ndim, long long d0, long long d1, long long d2,
                       long long d3) {
    poa_vit_tensor *t = &m->tensors[m->tensor_count++];
    long long shape[4] = { d0, d1, d2, d3 };
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->count = 1;
    for (int i = 0; i < 4; i++) {
        t->shape[i] = i < ndim ? shape[i] : 1;
        if (i < ndim) t->count *= (long)shape[i];
    }
    t->offset = m->parameter_count;
    m->parameter_count += t->count;
}

int poa_vit_init(poa_vit *m, const poa_vit_config *c, poa_error *e) {
    memset(m, 0, sizeof *m);
    m->config = *c;
    if (c->max_depth < 1 || c->max_depth > POA_VIT_MAX_DEPTH)
        return poa_fail(e, "model: depth %d outside 1..%d", c->max_depth, POA_VIT_MAX_DEPTH);
    if (c->max_width % c->head_dim || c->image_size % c->patch_size)
        return poa_fail(e, "model: width %d / head_dim %d or image %d / patch %d not whole",
                        c->max_width, c->head_dim, c->image_size, c->patch_size);
    const long long D = c->max_width, F = (long long)c->max_width * c->mlp_ratio;
    const long long P = c->patch_size, C = c->in_channels;
    const long long grid = c->image_size / c->patch_size;
    m->tensors = calloc((size_t)(8 + 16 * c->max_depth), sizeof *m->tensors);
    if (!m->tensors) return poa_fail(e, "model: out of memory");
    add_tensor(m, "patch_embed.proj.weight", 4, D, C, P, P);
    add_tensor(m, "patch_embed.proj.bias", 1, D, 0, 0, 0);
    add_tensor(m, "cls_token", 3, 1, 1, D, 0);
    add_tensor(m, "pos_embed", 3, 1, 1 + grid * grid, D, 0);
    add_tensor(m, "mask_token", 2, 1, D, 0, 0);
    /* a block's tensors in state-dict order (present: 0 where the model has none) */
    const struct { const char *suffix; int present, ndim; long long d0, d1; } block[] = {
        { "norm1.norm.weight", 1, 1, D, 0 }, { "norm1.norm.bias", 1, 1, D, 0 },
        { "attn.qkv.linear.weight", 1, 2, 3 * D, D }, { "attn.qkv.linear.bias", c->qkv_bias, 1, 3 * D, 0 },
        { "attn.proj.linear.weight", 1, 2, D, D }, { "attn.proj.linear.bias", c->proj_bias, 1, D, 0 },
        { "ls1.gamma", c->layerscale != 0, 1, D, 0 }, { "norm2.norm.weight", 1, 1, D, 0 },
        { "norm2.norm.bias", 1, 1, D, 0 }, { "mlp.fc1.linear.weight", 1, 2, F, D },
        { "mlp.fc1.linear.bias", c->ffn_bias, 1, F, 0 }, { "mlp.fc2.linear.weight", 1, 2, D, F },
        { "mlp.fc2.linear.bias", c->ffn_bias, 1, D, 0 }, { "ls2.gamma", c->layerscale != 0, 1, D, 0 } };
    for (int i = 0; i < c->max_depth; i++) {
        for (size_t k = 0; k < sizeof block / sizeof block[0]; k++) {
            char n[POA_VIT_NAME_SIZE];
            snprintf(n, sizeof n, "blocks.%d.%s", i, block[k].suffix);
            if (block[k].present) add_tensor(m, n, block[k].ndim, block[k].d0, block[k].d1, 0, 0);
        }
    }
    add_tensor(m, "norm.norm.weight", 1, D, 0, 0, 0);
    add_tensor(m, "norm.norm.bias", 1, D, 0, 0, 0);
    return 0;
}

void poa_vit_free(poa_vit *m) {
    free(m->tensors);
    m->tensors = NULL;
}

const poa_vit_tensor *poa_vit_find_tensor(const poa_vit *m, const char *name) {
    for (int i = 0; i < m->tensor_count; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Normal(0, std) truncated to [-2, 2] absolute, as torch.nn.init.trunc_normal_. */
static double truncated_normal(uint64_t seed, uint64_t stream, uint64_t index, double std) {
    for (uint64_t attempt = 0;; attempt++) {
        double v = std * poa_normal(seed, stream, index * 64 + attempt);
        if (v >= -2.0 && v <= 2.0) return v;
    }
}

void poa_vit_init_parameters(const poa_vit *m, real *params, unsigned long long seed) {
    const poa_vit_config *c = &m->config;
    const double fan_in = (double)c->in_channels * c->patch_size * c->patch_size;
    for (int i = 0; i < m->tensor_count; i++) {
        const poa_vit_tensor *t = &m->tensors[i];
        real *p = params + t->offset;
        for (long j = 0; j < t->count; j++) {
            double v = 0;
            if (strncmp(t->name, "patch_embed.", 12) == 0)
                v = (2 * poa_uniform(seed, (uint64_t)i, (uint64_t)j) - 1) / sqrt(fan_in);
            else if (strcmp(t->name, "cls_token") == 0)
                v = 1e-6 * poa_normal(seed, (uint64_t)i, (uint64_t)j);
            else if (strcmp(t->name, "pos_embed") == 0 || ends_with(t->name, "linear.weight"))
                v = truncated_normal(seed, (uint64_t)i, (uint64_t)j, 0.02);
            else if (ends_with(t->name, "norm.weight"))
                v = 1;
            else if (ends_with(t->name, ".gamma"))
                v = c->layerscale;
            p[j] = (real)v; /* biases, LayerNorm biases and mask_token stay 0 */
        }
    }
}

/* The first prefix under which every tensor of the model is in f, or NULL. */
static const char *backbone_prefix(const poa_vit *m, const poa_safetensors *f) {
    static const char *const prefixes[] = { "", "backbone.", "teacher.backbone." };
    char name[POA_VIT_NAME_SIZE + 32];
    for (int p = 0; p < 3; p++) {
        int all = 1;
        for (int i = 0; i < m->tensor_count && all; i++) {
            snprintf(name, sizeof name, "%s%s", prefixes[p], m->tensors[i].name);
            all = poa_safetensors_find(f, name) != NULL;
        }
        if (all) return prefixes[p];
    }
    return NULL;
}

int poa_vit_load_parameters(const poa_vit *m, real *params, const char *path,
                            const char **prefix_used, poa_error *e) {
    poa_safetensors f;
    if (poa_safetensors_open(&f, path, e)) return -1;
    const char *prefix = backbone_prefix(m, &f);
    char name[POA_VIT_NAME_SIZE + 32];
    int rc = 0;
    if (!prefix) {
        /* name the first missing tensor under the most likely prefix */
        const char *guess = poa_safetensors_find(&f, "teacher.backbone.cls_token") ? "teacher.backbone."
                          : poa_safetensors_find(&f, "backbone.cls_token")       ? "backbone."
                                                                                 : "";
        for (int i = 0; i < m->tensor_count; i++) {
            snprintf(name, sizeof name, "%s%s", guess, m->tensors[i].name);
            if (!poa_safetensors_find(&f, name)) break;
        }
        rc = poa_fail(e, "%s: missing tensor '%s' (looked for the backbone with no prefix, "
                         "'backbone.' and 'teacher.backbone.')", path, name);
    }
    if (rc == 0) rc = poa_vit_read_parameters(m, params, &f, prefix, e);
    poa_safetensors_close(&f);
    if (rc == 0 && prefix_used) *prefix_used = prefix;
    return rc;
}

int poa_vit_read_parameters(const poa_vit *m, real *params, const poa_safetensors *f, const char *prefix,
                            poa_error *e) {
    char name[POA_VIT_NAME_SIZE + 32];
    for (int i = 0; i < m->tensor_count; i++) {
        const poa_vit_tensor *t = &m->tensors[i];
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        if (!poa_safetensors_find(f, name)) return poa_fail(e, "%s: missing tensor '%s'", f->path, name);
        if (poa_safetensors_read_shaped(f, name, t->ndim, t->shape, params + t->offset, e)) return -1;
    }
    return 0;
}

int poa_vit_save_parameters(const poa_vit *m, const real *params, const char *path, poa_error *e) {
    poa_safetensors_writer *w = poa_safetensors_writer_new();
    if (!w) return poa_fail(e, "%s: out of memory", path);
    int rc = 0;
    for (int i = 0; i < m->tensor_count && rc == 0; i++) {
        const poa_vit_tensor *t = &m->tensors[i];
        rc = poa_safetensors_writer_add_real(w, t->name, t->ndim, t->shape, params + t->offset, e);
    }
    if (rc == 0) rc = poa_safetensors_writer_save(w, path, e);
    poa_safetensors_writer_free(w);
    return rc;
}
