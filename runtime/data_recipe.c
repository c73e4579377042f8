/* data_recipe.c: the loader configuration a recipe asks for: crop counts,
   sizes and scales, the augmentation of its `augment` section (blur, jitter, grayscale,
   solarize and flip probabilities and strengths; the reference's by default), and the
   iBOT mask grid of the model's patch size. */
#include "data_recipe.h"

static void set_scale(poa_crop_spec *spec, const double scale[2]) {
    spec->scale_min = (float)scale[0];
    spec->scale_max = (float)scale[1];
}

void poa_loader_config_from_recipe(poa_loader_config *c, const poa_recipe *r,
                                   const poa_dataset *dataset, int batch_size) {
    poa_loader_config_default(c, dataset, r->global_crop_size, r->local_crop_size,
                              r->local_crop_count, r->vit.patch_size, batch_size);
    poa_augment_config_default(&c->augment, r->global_crop_size, r->local_crop_size,
                               r->local_crop_count, r->paper_blur);
    c->augment.global_count = r->global_crop_count;
    set_scale(&c->augment.global_first, r->global_crop_scale);
    set_scale(&c->augment.global_second, r->global_crop_scale);
    set_scale(&c->augment.local, r->local_crop_scale);
    poa_augment_config *a = &c->augment;
    a->global_first.blur_probability = (float)r->blur_probability[0];
    a->global_second.blur_probability = (float)r->blur_probability[1];
    a->local.blur_probability = (float)r->blur_probability[2];
    a->global_second.solarize_probability = (float)r->solarize_probability;
    a->sigma_min = (float)r->sigma[0], a->sigma_max = (float)r->sigma[1];
    a->jitter_probability = (float)r->jitter_probability;
    a->brightness = (float)r->jitter[0], a->contrast = (float)r->jitter[1];
    a->saturation = (float)r->jitter[2], a->hue = (float)r->jitter[3];
    a->grayscale_probability = (float)r->grayscale_probability;
    a->flip_probability = (float)r->flip_probability;
}
