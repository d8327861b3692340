// img2img's start of the denoising loop (see src/pipeline/img2img.h): the timestep offset from
// strength and the initial latents from each item's init image, as diffusers'
// StableDiffusionImg2ImgPipeline computes them (get_timesteps, preprocess, prepare_latents).
#include "pipeline/img2img.h"

#include <fstream>
#include <iterator>
#include <string>

#include "sdmpi/error.h"
#include "sdmpi/hash.h"
#include "sdmpi/image_file.h"

namespace sdmpi {

Tensor img2img_initial_latents(Backend& be, const AutoencoderKLEncoder& encoder, const Scheduler& scheduler,
                               size_t first_call, const std::vector<WorkItem>& items,
                               const std::vector<TorchGenerator*>& generators) {
  SDMPI_CHECK(!items.empty() && generators.size() == items.size(), "img2img: one generator per item");
  const VAEConfig& vae = encoder.config();
  const DType compute = be.compute_dtype();
  std::vector<Tensor> per_item;
  for (size_t b = 0; b < items.size(); ++b) {
    const GenerationParams& p = items[b].params;
    SDMPI_CHECK(!p.init_image.empty(), "img2img batch with an item without an init image");
    // The file as the plan saw it (its hash, when the plan recorded one): a file replaced since
    // would give an image whose recorded hash lies.
    std::ifstream in(p.init_image, std::ios::binary);
    if (!in) throw InputError(p.init_image + ": cannot open the init image");
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!p.init_image_sha256.empty() && sha256_hex(bytes) != p.init_image_sha256)
      throw InputError(p.init_image + ": the init image changed after the job was planned (SHA-256 " +
                       sha256_hex(bytes) + ", planned " + p.init_image_sha256 + ")");
    const DecodedImage image = decode_image(std::vector<uint8_t>(bytes.begin(), bytes.end()), p.init_image);
    if (image.width != p.width || image.height != p.height)
      throw InputError(p.init_image + ": the init image is " + std::to_string(image.width) + "x" +
                       std::to_string(image.height) + ", the item asks for " + std::to_string(p.width) + "x" +
                       std::to_string(p.height));
    // VaeImageProcessor: np.float32(pixel) / 255.0, then 2.0 * x - 1.0, each rounded to float32.
    std::vector<float> pixels(image.rgb.size());
    for (size_t i = 0; i < pixels.size(); ++i) {
      const float x = static_cast<float>(image.rgb[i]) / 255.0f;
      const float doubled = 2.0f * x;
      pixels[i] = doubled - 1.0f;
    }
    const Tensor input = be.cast(be.from_host(pixels.data(), {1, image.height, image.width, 3}), compute);
    const std::vector<float> moments = be.to_host(be.cast(encoder.encode(be, input), DType::F32));
    const int64_t h = image.height / vae.scale_factor(), w = image.width / vae.scale_factor();
    const Shape latent_shape{1, h, w, vae.latent_channels};
    // latent_dist.sample(generator): the item's first draw, in the dtype the VAE runs in.
    const std::vector<float> sample_noise =
        be.to_host(be.cast(draw_per_item_noise(be, {generators[b]}, latent_shape), DType::F32));
    const std::vector<float> sample = sample_latent_distribution(moments, sample_noise, vae.latent_channels);
    per_item.push_back(be.binary_scalar(BinaryOp::Mul, be.cast(be.from_host(sample.data(), latent_shape), DType::F32),
                                        static_cast<float>(vae.scaling_factor), /*scalar_first=*/true));
  }
  const Tensor init_latents = per_item.size() == 1 ? per_item[0] : be.concat_batch(per_item);
  // randn_tensor(shape, generator=[...]): each item's second draw.
  const Tensor noise = be.cast(draw_per_item_noise(be, generators, init_latents.shape()), DType::F32);
  return scheduler.add_noise(be, init_latents, noise, first_call);
}

}  // namespace sdmpi
