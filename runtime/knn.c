/* knn.c: weighted k-NN of a member's features (see knn.h for the protocol). */
#include "knn.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "augment.h"
#include "backend.h"
#include "eval_features.h"
#include "jpeg_decode.h"
#include "safetensors.h"

const int poa_knn_default_ks[POA_KNN_K_COUNT] = { 10, 20, 100, 200 };

/* ---- the classifier ---- */

typedef struct neighbour {
    real similarity;
    long index;
} neighbour;

/* a ranks before b: greater similarity, then lower train index. */
static int ranks_before(const neighbour *a, const neighbour *b) {
    return a->similarity > b->similarity ||
           (a->similarity == b->similarity && a->index < b->index);
}

static int compare_neighbours(const void *pa, const void *pb) {
    const neighbour *a = pa, *b = pb;
    return ranks_before(a, b) ? -1 : ranks_before(b, a) ? 1 : 0;
}

/* The heap's root is its worst-ranked neighbour. */
static void sift_down(neighbour *heap, int size, int i) {
    for (;;) {
        int worst = i, l = 2 * i + 1, r = l + 1;
        if (l < size && ranks_before(&heap[worst], &heap[l])) worst = l;
        if (r < size && ranks_before(&heap[worst], &heap[r])) worst = r;
        if (worst == i) return;
        neighbour t = heap[i];
        heap[i] = heap[worst];
        heap[worst] = t;
        i = worst;
    }
}

static void sift_up(neighbour *heap, int i) {
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!ranks_before(&heap[parent], &heap[i])) return;
        neighbour t = heap[i];
        heap[i] = heap[parent];
        heap[parent] = t;
        i = parent;
    }
}

/* The best `count` of n similarities, best first. */
static void top_neighbours(const real *similarity, long n, int count, neighbour *out) {
    int size = 0;
    for (long j = 0; j < n; j++) {
        neighbour c = { similarity[j], j };
        if (size < count) {
            out[size] = c;
            sift_up(out, size++);
        } else if (ranks_before(&c, &out[0])) {
            out[0] = c;
            sift_down(out, size, 0);
        }
    }
    qsort(out, (size_t)size, sizeof *out, compare_neighbours);
}

/* Best class (ties: lower index) and the rank of `label` among the classes. */
static void rank_classes(const double *score, int class_count, int label, int *best, int *rank) {
    *best = 0;
    *rank = 0;
    for (int c = 0; c < class_count; c++) {
        if (score[c] > score[*best]) *best = c;
        if (score[c] > score[label] || (score[c] == score[label] && c < label)) (*rank)++;
    }
}

int poa_knn_classify(const real *train, const int *train_labels, long n_train,
                     const real *val, const int *val_labels, long n_val, int dim,
                     int class_count, const int *ks, int k_count, double temperature,
                     double *top1, double *top5, int *predictions, poa_error *e) {
    if (n_train <= 0 || n_val <= 0) return poa_fail(e, "k-NN: empty train or val set");
    if (class_count <= 0 || k_count <= 0 || dim <= 0 || temperature <= 0)
        return poa_fail(e, "k-NN: bad arguments");
    int max_k = 0;
    for (int i = 0; i < k_count; i++) {
        if (ks[i] <= 0) return poa_fail(e, "k-NN: k must be positive (got %d)", ks[i]);
        if (ks[i] > max_k) max_k = ks[i];
    }
    int neighbours = n_train < max_k ? (int)n_train : max_k;
    for (long i = 0; i < n_train; i++)
        if (train_labels[i] < 0 || train_labels[i] >= class_count)
            return poa_fail(e, "k-NN: train label %d of row %ld outside [0, %d)", train_labels[i], i, class_count);
    for (long i = 0; i < n_val; i++)
        if (val_labels[i] < 0 || val_labels[i] >= class_count)
            return poa_fail(e, "k-NN: val label %d of row %ld outside [0, %d)", val_labels[i], i, class_count);

    const long chunk = 256;
    real *similarity = malloc(sizeof(real) * (size_t)(chunk * n_train));
    long *correct1 = calloc((size_t)k_count, sizeof(long));
    long *correct5 = calloc((size_t)k_count, sizeof(long));
    if (!similarity || !correct1 || !correct5) {
        free(similarity);
        free(correct1);
        free(correct5);
        return poa_fail(e, "k-NN: out of memory for a %ld x %ld similarity block", chunk, n_train);
    }
    int top_m = class_count < 5 ? class_count : 5;
    int failed = 0;
    for (long v0 = 0; v0 < n_val && !failed; v0 += chunk) {
        long rows = n_val - v0 < chunk ? n_val - v0 : chunk;
        /* similarity = val_rows . train^T (cosine: the rows are unit vectors) */
        poa_gemm(0, 1, rows, n_train, dim, 1, val + v0 * dim, dim, train, dim, 0, similarity,
                 n_train);
#pragma omp parallel reduction(+ : failed)
        {
            neighbour *best = malloc(sizeof(neighbour) * (size_t)neighbours);
            double *weight = malloc(sizeof(double) * (size_t)neighbours);
            double *score = malloc(sizeof(double) * (size_t)class_count);
            long *hit1 = calloc((size_t)k_count, sizeof(long));
            long *hit5 = calloc((size_t)k_count, sizeof(long));
            if (!best || !weight || !score || !hit1 || !hit5) failed++;
#pragma omp for schedule(dynamic, 8)
            for (long r = 0; r < rows; r++) {
                if (!best || !weight || !score || !hit1 || !hit5) continue;
                long v = v0 + r;
                top_neighbours(similarity + r * n_train, n_train, neighbours, best);
                /* weights = softmax(sim / T) over the neighbours */
                double top = (double)best[0].similarity / temperature, total = 0;
                for (int j = 0; j < neighbours; j++) {
                    weight[j] = exp((double)best[j].similarity / temperature - top);
                    total += weight[j];
                }
                memset(score, 0, sizeof(double) * (size_t)class_count);
                for (int j = 0; j < neighbours; j++) {
                    score[train_labels[best[j].index]] += weight[j] / total;
                    for (int i = 0; i < k_count; i++) {
                        int k = ks[i] < neighbours ? ks[i] : neighbours;
                        if (k != j + 1) continue;
                        int predicted, rank;
                        rank_classes(score, class_count, val_labels[v], &predicted, &rank);
                        hit1[i] += predicted == val_labels[v];
                        hit5[i] += rank < top_m;
                        if (predictions) predictions[v * k_count + i] = predicted;
                    }
                }
            }
#pragma omp critical
            for (int i = 0; i < k_count && hit1 && hit5; i++) {
                correct1[i] += hit1[i];
                correct5[i] += hit5[i];
            }
            free(best);
            free(weight);
            free(score);
            free(hit1);
            free(hit5);
        }
    }
    for (int i = 0; i < k_count; i++) {
        top1[i] = (double)correct1[i] / (double)n_val;
        top5[i] = (double)correct5[i] / (double)n_val;
    }
    free(similarity);
    free(correct1);
    free(correct5);
    return failed ? poa_fail(e, "k-NN: out of memory") : 0;
}

/* ---- the subset and the images ---- */

long poa_knn_subset(long count, long limit, long *indices) {
    if (limit <= 0 || limit >= count) limit = count;
    for (long i = 0; indices && i < limit; i++)
        indices[i] = (long)((long double)i * count / limit);
    return limit;
}

void poa_knn_images_free(poa_knn_images *images) {
    free(images->pixels);
    free(images->labels);
    memset(images, 0, sizeof *images);
}

/* DINOv2's linear-probe train transform of one decoded image: RandomResizedCrop(size, scale
   0.08..1, ratio 3/4..4/3, bicubic) and a horizontal flip with probability 0.5. */
static int train_transform(const unsigned char *rgb, int width, int height, int size,
                           poa_rng *rng, unsigned char *out, unsigned char **scratch,
                           size_t *scratch_size, poa_error *e) {
    int top, left, crop_h, crop_w;
    poa_random_resized_crop(rng, width, height, 0.08f, 1.0f, &top, &left, &crop_h, &crop_w);
    if (poa_resize_bicubic(rgb, width, height, left, top, left + crop_w, top + crop_h, out, size,
                           size, scratch, scratch_size, e))
        return -1;
    if (poa_rng_uniform(rng) < 0.5) poa_flip_horizontal(out, size, size);
    return 0;
}

static int load_images(poa_knn_images *out, const poa_dataset *d, long limit, int size,
                       int threads, const unsigned long long *augment, poa_progress *progress, poa_error *e) {
    memset(out, 0, sizeof *out);
    if (d->count <= 0) return poa_fail(e, "k-NN: the dataset has no images");
    long *indices = malloc(sizeof(long) * (size_t)d->count);
    if (!indices) return poa_fail(e, "k-NN: out of memory");
    long n = poa_knn_subset(d->count, limit, indices);
    size_t image_bytes = (size_t)size * size * 3;
    out->pixels = malloc(image_bytes * (size_t)n);
    out->labels = malloc(sizeof(int) * (size_t)n);
    if (!out->pixels || !out->labels) {
        free(indices);
        poa_knn_images_free(out);
        return poa_fail(e, "k-NN: out of memory for %ld images of %dx%d", n, size, size);
    }
    out->count = n;
    out->size = size;
    out->class_count = d->class_count;
    int failed = 0;
    poa_error first = { { 0 } };
#pragma omp parallel num_threads(threads > 0 ? threads : omp_get_max_threads())
    {
        poa_jpeg_decoder *decoder = poa_jpeg_decoder_create();
        unsigned char *file = NULL, *scratch = NULL;
        size_t file_size = 0, file_capacity = 0, scratch_size = 0;
        poa_image image = { 0 };
        poa_error local = { { 0 } };
        int mine = decoder ? 0 : poa_fail(&local, "k-NN: cannot create a JPEG decoder");
#pragma omp for schedule(dynamic, 4)
        for (long i = 0; i < n; i++) {
            if (mine) continue;
            const char *path = d->paths[indices[i]];
            int num, denom;
            out->labels[i] = d->labels[indices[i]];
            mine = poa_read_file(path, &file, &file_size, &file_capacity, &local);
            if (!mine)
                mine = poa_image_decode(decoder, file, file_size, 1.0, &image, &num, &denom, path,
                                        &local);
            poa_rng rng = augment ? poa_rng_make(augment[0], 0, augment[1], (uint64_t)i, 0, 8000)
                                  : poa_rng_make(0, 0, 0, 0, 0, 0);
            unsigned char *pixels = out->pixels + image_bytes * (size_t)i;
            if (!mine && (augment ? train_transform(image.pixels, image.width, image.height, size, &rng,
                                                    pixels, &scratch, &scratch_size, &local)
                                  : poa_eval_transform(image.pixels, image.width, image.height,
                                                           size, pixels, &scratch, &scratch_size,
                                                           &local))) {
                poa_error why = local;
                mine = poa_fail(&local, "%s: %s", path, why.message);
            }
            if (progress) poa_progress_add(progress, 1);
        }
#pragma omp critical
        if (mine && !failed) {
            failed = 1;
            first = local;
        }
        if (decoder) poa_jpeg_decoder_destroy(decoder);
        free(file);
        free(scratch);
        poa_image_free(&image);
    }
    free(indices);
    if (failed) {
        poa_knn_images_free(out);
        return poa_fail(e, "%s", first.message);
    }
    return 0;
}

int poa_knn_load_images(poa_knn_images *out, const poa_dataset *d, long limit, int size,
                        int threads, poa_progress *progress, poa_error *e) {
    return load_images(out, d, limit, size, threads, NULL, progress, e);
}

int poa_knn_load_augmented(poa_knn_images *out, const poa_dataset *d, long limit, int size,
                           int threads, unsigned long long seed, long epoch, poa_error *e) {
    const unsigned long long augment[2] = { seed, (unsigned long long)epoch };
    return load_images(out, d, limit, size, threads, augment, NULL, e);
}

/* ---- features ---- */

/* Image i of images as the network is fed it: ImageNet-normalised, channels first. */
static void image_as_fed(const poa_knn_images *images, long i, float *out) {
    size_t image_bytes = (size_t)images->size * images->size * 3;
    poa_normalize(images->pixels + image_bytes * (size_t)i, images->size, images->size,
                  poa_imagenet_mean, poa_imagenet_std, out);
}

/* row /= max(|row|, 1e-12) (F.normalize), the norm accumulated in double. */
static void unit_row(const real *in, int dim, real *out) {
    double norm = 0;
    for (int j = 0; j < dim; j++) norm += (double)in[j] * in[j];
    norm = sqrt(norm);
    if (norm < 1e-12) norm = 1e-12;
    for (int j = 0; j < dim; j++) out[j] = (real)(in[j] / norm);
}

int poa_knn_pixel_features(const poa_knn_images *images, real *features, poa_error *e) {
    int dim = poa_knn_pixel_dim(images);
    float *fed = malloc(sizeof(float) * (size_t)dim);
    real *row = malloc(sizeof(real) * (size_t)dim);
    if (!fed || !row) {
        free(fed);
        free(row);
        return poa_fail(e, "k-NN: out of memory for a %d-value pixel row", dim);
    }
    for (long i = 0; i < images->count; i++) {
        image_as_fed(images, i, fed);
        for (int j = 0; j < dim; j++) row[j] = fed[j];
        unit_row(row, dim, features + i * dim);
    }
    free(fed);
    free(row);
    return 0;
}

int poa_knn_features(const poa_vit *model, const real *params, int width, int depth,
                     const poa_knn_images *images, long batch, real *features,
                     poa_progress *progress, poa_error *e) {
    poa_feature_spec spec = { 1, { depth - 1 }, 0 }; /* the final-LN CLS token */
    if (poa_features_compute(model, params, width, depth, &spec, images, batch, features, progress, e))
        return -1;
    for (long i = 0; i < images->count; i++) unit_row(features + i * width, width, features + i * width);
    return 0;
}
