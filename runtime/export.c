/* export.c: a member of the family as a plain network: the names its tensors are exported
   under, its slices of the intact parameters with alpha baked in (backbone and heads), and
   the loader that lets `poa forward` run an exported model.safetensors (runtime/export.h). */
#include "export.h"

#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int poa_export_names_parse(const char *text, poa_export_names *names, poa_error *e) {
    if (strcmp(text, "timm") == 0) *names = POA_EXPORT_TIMM;
    else if (strcmp(text, "dinov2") == 0) *names = POA_EXPORT_DINOV2;
    else return poa_fail(e, "unknown names '%s' (timm or dinov2)", text);
    return 0;
}

const char *poa_export_names_text(poa_export_names names) {
    return names == POA_EXPORT_DINOV2 ? "dinov2" : "timm";
}

/* poa's names are the official POA state dict's: the elastic layers wrap a plain one
   (attn.qkv.linear.weight, norm1.norm.weight). The plain network drops the wrapper's
   segment: "linear", and "norm" right after a norm* segment. */
int poa_export_name(poa_export_names names, const char *name, char *out, size_t size) {
    if (strcmp(name, "mask_token") == 0 && names == POA_EXPORT_TIMM) return 0;
    size_t used = 0;
    const char *segment = name, *previous = "";
    size_t previous_length = 0;
    out[0] = 0;
    while (*segment) {
        const char *dot = strchr(segment, '.');
        size_t n = dot ? (size_t)(dot - segment) : strlen(segment);
        int wrapper = (n == 6 && strncmp(segment, "linear", 6) == 0) ||
                      (n == 4 && strncmp(segment, "norm", 4) == 0 && previous_length >= 4 &&
                       strncmp(previous, "norm", 4) == 0);
        if (!wrapper && used + n + 2 <= size) {
            if (used) out[used++] = '.';
            memcpy(out + used, segment, n);
            out[used += n] = 0;
        }
        previous = segment, previous_length = n;
        segment = dot ? dot + 1 : segment + n;
    }
    return 1;
}

void poa_export_member_config(const poa_vit_config *family, int width, int depth, poa_vit_config *member) {
    *member = *family;
    member->max_width = width;
    member->max_depth = depth;
}

/* dst = scale * the leading box src[0:dst_shape[0], ..., 0:dst_shape[ndim-1]] of a row-major
   src of src_shape. */
static void copy_leading_box(const real *src, const long long *src_shape, real *dst, const long long *dst_shape,
                             int ndim, real scale) {
    long long count = 1;
    for (int k = 0; k < ndim; k++) count *= dst_shape[k];
    for (long long i = 0; i < count; i++) {
        long long rest = i, offset = 0, stride = 1;
        for (int k = ndim - 1; k >= 0; k--) {
            offset += rest % dst_shape[k] * stride;
            rest /= dst_shape[k];
            stride *= src_shape[k];
        }
        dst[i] = scale * src[offset];
    }
}

/* Copies tensor t (of the member) from tensor s (of the intact network): the leading box, the
   qkv weight and bias as 3 groups (q, k, v rows) each cut to its leading box. */
static int slice_tensor(const poa_vit_tensor *s, const real *src, const poa_vit_tensor *t, real *dst, int groups,
                        real scale, poa_error *e) {
    long long src_shape[5], dst_shape[5];
    int ndim = t->ndim;
    if (s->ndim != ndim) return poa_fail(e, "export: tensor '%s' has %d dimensions, '%s' %d", t->name, ndim, s->name, s->ndim);
    for (int k = 0; k < ndim; k++) {
        src_shape[k] = s->shape[k], dst_shape[k] = t->shape[k];
        if (dst_shape[k] > src_shape[k] || (k == 0 && (src_shape[0] % groups || dst_shape[0] % groups)))
            return poa_fail(e, "export: tensor '%s' does not fit in '%s'", t->name, s->name);
    }
    if (groups > 1) { /* (3D, ...) viewed as (3, D, ...) */
        memmove(src_shape + 1, src_shape, sizeof(long long) * (size_t)ndim);
        memmove(dst_shape + 1, dst_shape, sizeof(long long) * (size_t)ndim);
        src_shape[0] = dst_shape[0] = groups;
        src_shape[1] /= groups, dst_shape[1] /= groups;
        ndim++;
    }
    copy_leading_box(src + s->offset, src_shape, dst + t->offset, dst_shape, ndim, scale);
    return 0;
}

int poa_export_slice_backbone(const poa_vit *intact, const real *params, const poa_vit *member, real *out,
                              poa_error *e) {
    const int width = member->config.max_width, depth = member->config.max_depth;
    poa_vit_pass layout; /* the member's block ids and alpha, as its forward reads them */
    if (poa_vit_pass_init(&layout, intact, width, depth, 1, intact->config.image_size, POA_VIT_PASS_LAYOUT, e))
        return -1;
    poa_vit_pass_free(&layout);
    for (int i = 0; i < member->tensor_count; i++) {
        const poa_vit_tensor *t = &member->tensors[i];
        char name[POA_VIT_NAME_SIZE];
        int j = -1, consumed = 0, groups = 1, scaled = 0;
        if (sscanf(t->name, "blocks.%d.%n", &j, &consumed) == 1 && consumed > 0 && j >= 0 && j < depth) {
            snprintf(name, sizeof name, "blocks.%d.%s", layout.block_ids[j], t->name + consumed);
            /* the q/k/v grouping, and alpha multiplies the block's linear weights */
            groups = strncmp(t->name + consumed, "attn.qkv.", 9) == 0 ? 3 : 1;
            scaled = strstr(t->name + consumed, "linear.weight") != NULL;
        } else {
            snprintf(name, sizeof name, "%s", t->name);
        }
        const poa_vit_tensor *s = poa_vit_find_tensor(intact, name);
        if (!s) return poa_fail(e, "export: the intact network has no tensor '%s'", name);
        if (slice_tensor(s, params, t, out, groups, scaled ? layout.alpha : 1, e)) return -1;
    }
    return 0;
}

int poa_export_slice_heads(const poa_heads *intact, const real *params, const poa_heads *member, real *out,
                           poa_error *e) {
    if (intact->tensor_count != member->tensor_count)
        return poa_fail(e, "export: the heads have %d tensors, the member's %d", intact->tensor_count,
                        member->tensor_count);
    const real alpha = (real)((double)intact->config.in_dim / member->config.in_dim);
    for (int i = 0; i < member->tensor_count; i++) {
        const poa_vit_tensor *t = &member->tensors[i];
        int first_layer = 0;
        for (int h = 0; h < member->config.heads; h++) first_layer |= t->offset == member->head[h].w0;
        if (strcmp(t->name, intact->tensors[i].name))
            return poa_fail(e, "export: head tensor '%s' is '%s' in the intact heads", t->name,
                            intact->tensors[i].name);
        if (slice_tensor(&intact->tensors[i], params, t, out, 1, first_layer ? alpha : 1, e)) return -1;
    }
    return 0;
}

/* Reads an export's tensors into the member's ViT (params zeroed first: mask_token stays 0
   when the naming has none). */
static int read_export(const poa_safetensors *f, const poa_vit *model, real *params, int *has_mask_token,
                       poa_error *e) {
    const char *text = poa_safetensors_metadata(f, "names");
    poa_export_names names = POA_EXPORT_TIMM;
    if (!text || poa_export_names_parse(text, &names, e))
        return poa_fail(e, "%s: metadata 'names' is '%s', not timm or dinov2", f->path, text ? text : "absent");
    *has_mask_token = names != POA_EXPORT_TIMM;
    memset(params, 0, sizeof(real) * (size_t)model->parameter_count);
    for (int i = 0; i < model->tensor_count; i++) {
        const poa_vit_tensor *t = &model->tensors[i];
        char name[POA_VIT_NAME_SIZE];
        if (!poa_export_name(names, t->name, name, sizeof name)) continue;
        if (!poa_safetensors_find(f, name))
            return poa_fail(e, "%s: missing tensor '%s' (an export under %s names)", f->path, name, text);
        if (poa_safetensors_read_shaped(f, name, t->ndim, t->shape, params + t->offset, e)) return -1;
    }
    return 0;
}

int poa_export_open_parameters(const poa_vit_config *family, int width, int depth, const char *path,
                               poa_vit *model, real **params, int *has_mask_token, poa_error *e) {
    poa_safetensors f;
    if (poa_safetensors_open(&f, path, e)) return -1;
    const char *format = poa_safetensors_metadata(&f, "export");
    const char *member = poa_safetensors_metadata(&f, "member");
    char expected[32];
    snprintf(expected, sizeof expected, "%dx%d", width, depth);
    poa_vit_config config = *family;
    int exported = format && strcmp(format, POA_EXPORT_FORMAT) == 0, rc = 0;
    memset(model, 0, sizeof *model);
    *params = NULL;
    *has_mask_token = 1;
    if (exported && (!member || strcmp(member, expected)))
        rc = poa_fail(e, "%s: an export of member %s, not of %s", path, member ? member : "(none)", expected);
    if (exported) poa_export_member_config(family, width, depth, &config);
    if (rc == 0) rc = poa_vit_init(model, &config, e);
    if (rc == 0 && !(*params = malloc(sizeof(real) * (size_t)model->parameter_count)))
        rc = poa_fail(e, "out of memory for %ld parameters", model->parameter_count);
    if (rc == 0) rc = exported ? read_export(&f, model, *params, has_mask_token, e)
                               : poa_vit_load_parameters(model, *params, path, NULL, e);
    poa_safetensors_close(&f);
    if (rc) {
        free(*params);
        *params = NULL;
        poa_vit_free(model);
    }
    return rc;
}
