/* data_loader.c: worker threads, the prefetch ring and the per-sample pipeline. */
#include "data_loader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "jpeg_decode.h"

enum { MAX_CROPS = 64, MAX_ATTEMPTS = 10 };

void poa_loader_config_default(poa_loader_config *c, const poa_dataset *dataset,
                               int global_size, int local_size, int local_count,
                               int patch_size, int batch_size) {
    memset(c, 0, sizeof *c);
    c->dataset = dataset;
    poa_augment_config_default(&c->augment, global_size, local_size, local_count, 0);
    c->batch_size = batch_size;
    c->threads = 1;
    c->prefetch = 2;
    c->world_size = 1;
    c->patch_size = patch_size;
    c->mask_probability = 0.5;
    c->mask_ratio_min = 0.1;
    c->mask_ratio_max = 0.5;
}

/* ---- the sampler: a keyed bijection of [0, n) (Feistel network + cycle walking) ---- */

static uint64_t permute(uint64_t i, uint64_t n, uint64_t key) {
    int bits = 2;
    while (((uint64_t)1 << bits) < n) bits++;
    int half = (bits + 1) / 2;
    uint64_t mask = ((uint64_t)1 << half) - 1;
    do {
        uint64_t left = i >> half, right = i & mask;
        for (int round = 0; round < 4; round++) {
            uint64_t f = poa_mix64(key ^ ((uint64_t)round << 56) ^ right) & mask;
            uint64_t t = left ^ f;
            left = right;
            right = t;
        }
        i = left << half | right;
    } while (i >= n);
    return i;
}

long poa_loader_sample_index(const poa_loader_config *c, long step, int sample) {
    uint64_t n = (uint64_t)c->dataset->count;
    uint64_t position = ((uint64_t)step * c->world_size + c->rank) * c->batch_size + sample;
    uint64_t epoch = position / n;
    return (long)permute(position % n, n, poa_mix64(c->seed * 0x9E3779B97F4A7C15ull + epoch));
}

/* ---- one sample ---- */

struct poa_sample_worker {
    poa_jpeg_decoder *decoder;
    unsigned char *file;
    size_t file_size, file_capacity;
    poa_image image;
    poa_augment_work work;
};

poa_sample_worker *poa_sample_worker_create(void) {
    poa_sample_worker *w = calloc(1, sizeof *w);
    if (w && !(w->decoder = poa_jpeg_decoder_create())) {
        free(w);
        return NULL;
    }
    return w;
}

void poa_sample_worker_destroy(poa_sample_worker *w) {
    if (!w) return;
    poa_jpeg_decoder_destroy(w->decoder);
    free(w->file);
    poa_image_free(&w->image);
    poa_augment_work_free(&w->work);
    free(w);
}

static const poa_crop_spec *crop_spec(const poa_augment_config *a, int crop) {
    if (crop >= a->global_count) return &a->local;
    return crop == 0 ? &a->global_first : &a->global_second;
}

/* Decodes dataset image `index` and writes all its crops; -1 with a message on a bad file. */
static int try_sample(poa_sample_worker *w, const poa_loader_config *c, long step, int sample,
                      int attempt, long index, poa_batch *b, poa_error *e) {
    const poa_augment_config *a = &c->augment;
    const char *path = c->dataset->paths[index];
    int width, height, crops = a->global_count + a->local.count;
    if (crops > MAX_CROPS) return poa_fail(e, "loader: more than %d crops", MAX_CROPS);
    if (poa_read_file(path, &w->file, &w->file_size, &w->file_capacity, e) != 0 ||
        poa_image_header(w->decoder, w->file, w->file_size, &width, &height, path, e) != 0)
        return -1;
    poa_crop_params params[MAX_CROPS];
    double min_scale = c->full_decode ? 1.0 : 0.0;
    for (int k = 0; k < crops; k++) {
        const poa_crop_spec *spec = crop_spec(a, k);
        poa_rng rng = poa_rng_make(c->seed, (uint64_t)c->rank, (uint64_t)step, (uint64_t)sample,
                                   (uint64_t)k, (uint64_t)attempt);
        poa_draw_crop_params(a, spec, &rng, width, height, &params[k]);
        double need_w = (double)spec->size / params[k].width;
        double need_h = (double)spec->size / params[k].height;
        if (need_w > min_scale) min_scale = need_w;
        if (need_h > min_scale) min_scale = need_h;
    }
    int num, denom;
    if (poa_image_decode(w->decoder, w->file, w->file_size, min_scale, &w->image, &num, &denom,
                         path, e) != 0)
        return -1;
    int B = b->batch_size;
    for (int k = 0; k < crops; k++) {
        int global = k < a->global_count, size = global ? b->global_size : b->local_size;
        size_t plane = (size_t)3 * size * size;
        float *out = global ? b->global_crops + ((size_t)k * B + sample) * plane
                            : b->local_crops + ((size_t)(k - a->global_count) * B + sample) * plane;
        if (poa_augment_crop(&params[k], w->image.pixels, w->image.width, w->image.height, num,
                             denom, size, &w->work, out, e) != 0)
            return -1;
    }
    return 0;
}

long poa_load_sample(poa_sample_worker *w, const poa_loader_config *c, long step, int sample,
                     poa_batch *b, long *skipped, poa_error *e) {
    long index = poa_loader_sample_index(c, step, sample);
    for (int attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        if (attempt > 0) { /* a replacement drawn from (seed, rank, step, sample, attempt) */
            poa_rng rng = poa_rng_make(c->seed, (uint64_t)c->rank, (uint64_t)step,
                                       (uint64_t)sample, 1000, (uint64_t)attempt);
            index = (long)poa_rng_below(&rng, (uint64_t)c->dataset->count);
        }
        if (try_sample(w, c, step, sample, attempt, index, b, e) == 0) {
            b->image_indices[sample] = (int)index;
            b->labels[sample] = c->dataset->labels[index];
            return index;
        }
        __atomic_add_fetch(skipped, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&b->skipped, 1, __ATOMIC_RELAXED);
        if (!c->quiet) fprintf(stderr, "poa: warning: skipped %s\n", e->message);
    }
    char last[sizeof e->message];
    memcpy(last, e->message, sizeof last);
    return poa_fail(e, "loader: step %ld sample %d: %d unreadable images in a row (last: %.900s)",
                    step, sample, MAX_ATTEMPTS, last);
}

/* ---- the threaded loader: a ring of `prefetch` batches filled sample by sample ---- */

typedef struct slot {
    poa_batch batch;
    long step;      /* the step this slot holds (-1: none) */
    int remaining;  /* samples not yet written */
} slot;

struct poa_loader {
    poa_loader_config config;
    poa_mask_generator masks;
    slot *slots;
    pthread_t *threads;
    int thread_count;
    pthread_mutex_t lock;
    pthread_cond_t space, ready;
    long next_job;      /* next (step, sample) to hand out, as step * B + sample */
    long consumer_step; /* the step the trainer reads next (or is reading) */
    int holding;        /* 1 while the trainer holds consumer_step's batch */
    int stop, failed;
    long skipped;
    poa_error error;
};

static void *worker_main(void *arg) {
    poa_loader *l = arg;
    const poa_loader_config *c = &l->config;
    int B = c->batch_size;
    poa_sample_worker *w = poa_sample_worker_create();
    poa_error e = { "" };
    for (;;) {
        pthread_mutex_lock(&l->lock);
        while (!l->stop && l->next_job / B >= l->consumer_step + c->prefetch)
            pthread_cond_wait(&l->space, &l->lock);
        if (l->stop) {
            pthread_mutex_unlock(&l->lock);
            break;
        }
        long job = l->next_job++, step = job / B;
        int sample = (int)(job % B);
        slot *s = &l->slots[step % c->prefetch];
        if (sample == 0) {
            s->step = step;
            s->remaining = B;
            s->batch.step = step;
            s->batch.skipped = 0;
        }
        pthread_mutex_unlock(&l->lock);
        long rc = w ? poa_load_sample(w, c, step, sample, &s->batch, &l->skipped, &e)
                    : poa_fail(&e, "loader: cannot start a JPEG decoder");
        pthread_mutex_lock(&l->lock);
        if (rc < 0 && !l->failed) {
            l->failed = 1;
            l->error = e;
        }
        if (--s->remaining == 0 || rc < 0) pthread_cond_broadcast(&l->ready);
        pthread_mutex_unlock(&l->lock);
    }
    poa_sample_worker_destroy(w);
    return NULL;
}

static int alloc_batch(poa_batch *b, const poa_loader_config *c, poa_error *e) {
    const poa_augment_config *a = &c->augment;
    int B = c->batch_size, g = a->global_first.size, s = a->local.size;
    b->batch_size = B;
    b->global_count = a->global_count;
    b->local_count = a->local.count;
    b->global_size = g;
    b->local_size = s;
    b->global_crops = malloc(sizeof(float) * a->global_count * B * 3 * g * g);
    b->local_crops = malloc(sizeof(float) * (a->local.count ? a->local.count : 1) * B * 3 * s * s);
    b->image_indices = calloc((size_t)B, sizeof(int));
    b->labels = calloc((size_t)B, sizeof(int));
    if (!b->global_crops || !b->local_crops || !b->image_indices || !b->labels)
        return poa_fail(e, "loader: out of memory for a batch of %d", B);
    int grid = g / c->patch_size;
    return poa_mask_batch_alloc(&b->masks, a->global_count * B, grid * grid, e);
}

static void free_batch(poa_batch *b) {
    free(b->global_crops);
    free(b->local_crops);
    free(b->image_indices);
    free(b->labels);
    poa_mask_batch_free(&b->masks);
}

int poa_loader_create(poa_loader **out, const poa_loader_config *c, poa_error *e) {
    *out = NULL;
    if (!c->dataset || c->dataset->count <= 0) return poa_fail(e, "loader: empty dataset");
    if (c->batch_size <= 0 || c->threads <= 0 || c->prefetch <= 0 || c->world_size <= 0 ||
        c->rank < 0 || c->rank >= c->world_size || c->patch_size <= 0 ||
        c->augment.global_first.size != c->augment.global_second.size ||
        c->augment.global_first.size % c->patch_size != 0)
        return poa_fail(e, "loader: bad configuration (batch %d, threads %d, prefetch %d, rank "
                        "%d of %d, patch %d, global size %d)", c->batch_size, c->threads,
                        c->prefetch, c->rank, c->world_size, c->patch_size,
                        c->augment.global_first.size);
    poa_loader *l = calloc(1, sizeof *l);
    if (!l) return poa_fail(e, "loader: out of memory");
    l->config = *c;
    int grid = c->augment.global_first.size / c->patch_size;
    poa_mask_generator_init(&l->masks, grid, grid);
    l->slots = calloc((size_t)c->prefetch, sizeof *l->slots);
    l->threads = calloc((size_t)c->threads, sizeof *l->threads);
    if (!l->slots || !l->threads) {
        poa_loader_destroy(l);
        return poa_fail(e, "loader: out of memory");
    }
    for (int i = 0; i < c->prefetch; i++) {
        l->slots[i].step = -1;
        if (alloc_batch(&l->slots[i].batch, c, e) != 0) {
            poa_loader_destroy(l);
            return -1;
        }
    }
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->space, NULL);
    pthread_cond_init(&l->ready, NULL);
    l->next_job = c->first_step * c->batch_size;
    l->consumer_step = c->first_step;
    for (int i = 0; i < c->threads; i++) {
        if (pthread_create(&l->threads[i], NULL, worker_main, l) != 0) {
            poa_loader_destroy(l);
            return poa_fail(e, "loader: cannot start worker thread %d", i);
        }
        l->thread_count++;
    }
    *out = l;
    return 0;
}

int poa_loader_next(poa_loader *l, const poa_batch **batch, poa_error *e) {
    pthread_mutex_lock(&l->lock);
    if (l->holding) { /* give the previous batch back */
        l->consumer_step++;
        l->holding = 0;
        pthread_cond_broadcast(&l->space);
    }
    slot *s = &l->slots[l->consumer_step % l->config.prefetch];
    while (!l->failed && !(s->step == l->consumer_step && s->remaining == 0))
        pthread_cond_wait(&l->ready, &l->lock);
    if (l->failed) {
        *e = l->error;
        pthread_mutex_unlock(&l->lock);
        return -1;
    }
    l->holding = 1;
    pthread_mutex_unlock(&l->lock);
    const poa_loader_config *c = &l->config;
    poa_rng rng = poa_rng_make(c->seed, (uint64_t)c->rank, (uint64_t)s->step, 0, 0, 2000);
    poa_collate_masks(&l->masks, &rng, c->mask_probability, c->mask_ratio_min,
                      c->mask_ratio_max, &s->batch.masks);
    *batch = &s->batch;
    return 0;
}

long poa_loader_skipped(const poa_loader *l) {
    return __atomic_load_n(&l->skipped, __ATOMIC_RELAXED);
}

void poa_loader_destroy(poa_loader *l) {
    if (!l) return;
    if (l->thread_count) {
        pthread_mutex_lock(&l->lock);
        l->stop = 1;
        pthread_cond_broadcast(&l->space);
        pthread_mutex_unlock(&l->lock);
        for (int i = 0; i < l->thread_count; i++) pthread_join(l->threads[i], NULL);
        pthread_mutex_destroy(&l->lock);
        pthread_cond_destroy(&l->space);
        pthread_cond_destroy(&l->ready);
    }
    for (int i = 0; l->slots && i < l->config.prefetch; i++) free_batch(&l->slots[i].batch);
    free(l->slots);
    free(l->threads);
    free(l);
}
