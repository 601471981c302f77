// Tile-binned alpha compositing on the CPU, forward and backward, with the per-pixel rules of
// splat_portrait/render/torch_backend.py (gsplat 1.5.3's): alpha = min(0.999, o exp(-sigma)),
// splats under 1/255 skipped, a pixel stops before the splat that would take T to <= 1e-4.
//
// Splats are binned into TILE x TILE tiles by the pixel box of their alpha >= 1/255 ellipse, in
// depth order (stable, so ties keep input order). A tile walks its list front to back and each
// splat updates only the tile's pixels inside its box, which keeps every pixel's arithmetic in
// the same front-to-back order as a per-pixel loop while touching each splat's data once per tile
// (a per-pixel loop re-reads the whole list for every pixel, mostly cache misses). Tiles run in
// parallel (OpenMP). The backward pass walks the list back to front from the last splat each pixel
// drew, recovering T by division like gsplat, and gathers per-splat gradients in one buffer per
// thread, summed at the end (no atomics).

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr int TILE = 16;
constexpr float ALPHA_MIN = 1.0f / 255.0f;
constexpr float ALPHA_MAX = 0.999f;
constexpr float T_MIN = 1e-4f;
constexpr float BOX_MARGIN = 0.01f;

struct Bins {
  int tiles_x, tiles_y;
  std::vector<int32_t> starts;  // (B * tiles + 1) offsets into entries
  std::vector<int32_t> entries; // splat index b * N + n, per tile front to back
  std::vector<int32_t> box;     // (B * N, 4): x0, x1, y0, y1 pixel box (empty when x1 < x0)
};

Bins bin(const float* means2d, const float* depths, const float* extents, const bool* visible, int B, int N,
         int width, int height) {
  Bins bins;
  bins.tiles_x = (width + TILE - 1) / TILE;
  bins.tiles_y = (height + TILE - 1) / TILE;
  const int tiles = bins.tiles_x * bins.tiles_y;
  bins.box.assign(static_cast<size_t>(B) * N * 4, 0);
  std::vector<int32_t> count(static_cast<size_t>(B) * tiles + 1, 0);
  std::vector<std::vector<int32_t>> order(B);
  for (int b = 0; b < B; ++b) {
    std::vector<int32_t>& ids = order[b];
    for (int n = 0; n < N; ++n) {
      const int i = b * N + n;
      int32_t* box = &bins.box[static_cast<size_t>(i) * 4];
      box[0] = 0, box[1] = -1, box[2] = 0, box[3] = -1;
      if (!visible[i]) continue;
      const float mx = means2d[2 * i], my = means2d[2 * i + 1], ex = extents[2 * i], ey = extents[2 * i + 1];
      // Pixel j is needed when its centre j + 0.5 lies within the extent of the mean.
      const int x0 = std::max(0.0f, std::ceil(mx - ex - 0.5f - BOX_MARGIN));
      const int x1 = std::min(width - 1.0f, std::floor(mx + ex - 0.5f + BOX_MARGIN));
      const int y0 = std::max(0.0f, std::ceil(my - ey - 0.5f - BOX_MARGIN));
      const int y1 = std::min(height - 1.0f, std::floor(my + ey - 0.5f + BOX_MARGIN));
      if (x1 < x0 || y1 < y0) continue;
      box[0] = x0, box[1] = x1, box[2] = y0, box[3] = y1;
      ids.push_back(i);
    }
    std::stable_sort(ids.begin(), ids.end(), [&](int32_t p, int32_t q) { return depths[p] < depths[q]; });
    for (int32_t i : ids) {
      const int32_t* box = &bins.box[static_cast<size_t>(i) * 4];
      for (int ty = box[2] / TILE; ty <= box[3] / TILE; ++ty)
        for (int tx = box[0] / TILE; tx <= box[1] / TILE; ++tx) ++count[b * tiles + ty * bins.tiles_x + tx + 1];
    }
  }
  std::partial_sum(count.begin(), count.end(), count.begin());
  bins.starts = count;
  bins.entries.resize(count.back());
  std::vector<int32_t> fill(count.begin(), count.end() - 1);
  for (int b = 0; b < B; ++b)
    for (int32_t i : order[b]) {
      const int32_t* box = &bins.box[static_cast<size_t>(i) * 4];
      for (int ty = box[2] / TILE; ty <= box[3] / TILE; ++ty)
        for (int tx = box[0] / TILE; tx <= box[1] / TILE; ++tx) bins.entries[fill[b * tiles + ty * bins.tiles_x + tx]++] = i;
    }
  return bins;
}

// Largest sigma at which opacity * exp(-sigma) can still reach 1/255, with a margin for rounding:
// past it the exp is not worth computing (the exact test below would drop the splat anyway).
inline float sigma_cut(float opacity) { return opacity > 0.0f ? std::log(255.0f * opacity) + 1e-3f : -1.0f; }

// raw = opacity * exp(-sigma) at pixel (x, y), with the offset d from the mean; 0 past the cut.
inline float raw_alpha(const float* mean, const float* conic, float opacity, float cut, int x, int y, float& dx, float& dy,
                       float& g) {
  dx = x + 0.5f - mean[0];
  dy = y + 0.5f - mean[1];
  const float sigma = 0.5f * (conic[0] * dx * dx + conic[2] * dy * dy) + conic[1] * dx * dy;
  if (sigma > cut) return 0.0f;
  g = std::exp(-sigma);
  return opacity * g;
}

}  // namespace

std::vector<torch::Tensor> forward(torch::Tensor means2d, torch::Tensor conics, torch::Tensor opacities,
                                   torch::Tensor features, torch::Tensor depths, torch::Tensor extents,
                                   torch::Tensor visible, int64_t width, int64_t height) {
  const int B = features.size(0), N = features.size(1), C = features.size(2);
  means2d = means2d.contiguous(), conics = conics.contiguous(), opacities = opacities.contiguous();
  features = features.contiguous(), depths = depths.contiguous(), extents = extents.contiguous();
  visible = visible.contiguous();
  Bins bins = bin(means2d.data_ptr<float>(), depths.data_ptr<float>(), extents.data_ptr<float>(),
                  visible.data_ptr<bool>(), B, N, width, height);
  auto out = torch::zeros({B, height, width, C}, features.options());
  auto t_final = torch::ones({B, height, width}, features.options());
  auto last = torch::zeros({B, height, width}, features.options().dtype(torch::kInt32));
  const float *M = means2d.data_ptr<float>(), *Q = conics.data_ptr<float>(), *O = opacities.data_ptr<float>();
  const float* F = features.data_ptr<float>();
  float *OUT = out.data_ptr<float>(), *TF = t_final.data_ptr<float>();
  int32_t* LAST = last.data_ptr<int32_t>();
  const int tiles = bins.tiles_x * bins.tiles_y;
#pragma omp parallel for schedule(dynamic, 4)
  for (int t = 0; t < B * tiles; ++t) {
    const int b = t / tiles, tx = (t % tiles) % bins.tiles_x, ty = (t % tiles) / bins.tiles_x;
    const int x_begin = tx * TILE, y_begin = ty * TILE;
    const int x_end = std::min<int>(width, x_begin + TILE), y_end = std::min<int>(height, y_begin + TILE);
    float T[TILE * TILE];
    int32_t drawn_to[TILE * TILE];
    bool done[TILE * TILE];
    std::vector<float> acc(static_cast<size_t>(TILE) * TILE * C, 0.0f);
    std::fill(T, T + TILE * TILE, 1.0f);
    std::fill(drawn_to, drawn_to + TILE * TILE, bins.starts[t]);
    std::fill(done, done + TILE * TILE, false);
    int active = (x_end - x_begin) * (y_end - y_begin);
    for (int e = bins.starts[t]; e < bins.starts[t + 1] && active > 0; ++e) {
      const int i = bins.entries[e];
      const int32_t* box = &bins.box[static_cast<size_t>(i) * 4];
      const float* mean = M + 2 * i;
      const float* conic = Q + 3 * i;
      const float* f = F + static_cast<size_t>(i) * C;
      const float cut = sigma_cut(O[i]);
      for (int y = std::max(box[2], y_begin); y <= std::min(box[3], y_end - 1); ++y)
        for (int x = std::max(box[0], x_begin); x <= std::min(box[1], x_end - 1); ++x) {
          const int k = (y - y_begin) * TILE + (x - x_begin);
          if (done[k]) continue;
          float dx, dy, g;
          const float raw = raw_alpha(mean, conic, O[i], cut, x, y, dx, dy, g);
          if (raw < ALPHA_MIN) continue;
          const float alpha = std::min(ALPHA_MAX, raw);
          const float next_T = T[k] * (1.0f - alpha);
          if (next_T <= T_MIN) {
            done[k] = true;
            --active;
            continue;
          }
          const float w = alpha * T[k];
          float* a = &acc[static_cast<size_t>(k) * C];
          for (int c = 0; c < C; ++c) a[c] += w * f[c];
          T[k] = next_T;
          drawn_to[k] = e + 1;
        }
    }
    for (int y = y_begin; y < y_end; ++y)
      for (int x = x_begin; x < x_end; ++x) {
        const int k = (y - y_begin) * TILE + (x - x_begin);
        const size_t p = (static_cast<size_t>(b) * height + y) * width + x;
        std::copy(&acc[static_cast<size_t>(k) * C], &acc[static_cast<size_t>(k) * C] + C, OUT + p * C);
        TF[p] = T[k];
        LAST[p] = drawn_to[k];
      }
  }
  auto starts = torch::from_blob(bins.starts.data(), {static_cast<int64_t>(bins.starts.size())}, torch::kInt32).clone();
  auto entries = torch::from_blob(bins.entries.data(), {static_cast<int64_t>(bins.entries.size())}, torch::kInt32).clone();
  auto box = torch::from_blob(bins.box.data(), {static_cast<int64_t>(bins.box.size())}, torch::kInt32).clone();
  return {out, t_final, last, starts, entries, box};
}

std::vector<torch::Tensor> backward(torch::Tensor grad_out, torch::Tensor means2d, torch::Tensor conics,
                                    torch::Tensor opacities, torch::Tensor features, torch::Tensor t_final,
                                    torch::Tensor last, torch::Tensor starts, torch::Tensor entries, torch::Tensor box) {
  const int B = features.size(0), N = features.size(1), C = features.size(2);
  const int height = t_final.size(1), width = t_final.size(2);
  const int tiles_x = (width + TILE - 1) / TILE, tiles_y = (height + TILE - 1) / TILE, tiles = tiles_x * tiles_y;
  grad_out = grad_out.contiguous();
  const float *G = grad_out.data_ptr<float>(), *M = means2d.data_ptr<float>(), *Q = conics.data_ptr<float>();
  const float *O = opacities.data_ptr<float>(), *F = features.data_ptr<float>(), *TF = t_final.data_ptr<float>();
  const int32_t *LAST = last.data_ptr<int32_t>(), *S = starts.data_ptr<int32_t>(), *E = entries.data_ptr<int32_t>();
  const int32_t* BOX = box.data_ptr<int32_t>();
  const int width_g = 6 + C;  // mean (2), conic (3), opacity, features (C)
#ifdef _OPENMP
  const int threads = omp_get_max_threads();
#else
  const int threads = 1;
#endif
  std::vector<float> buffers(static_cast<size_t>(threads) * B * N * width_g, 0.0f);
#pragma omp parallel
  {
#ifdef _OPENMP
    float* mine = buffers.data() + static_cast<size_t>(omp_get_thread_num()) * B * N * width_g;
#else
    float* mine = buffers.data();
#endif
#pragma omp for schedule(dynamic, 4)
    for (int t = 0; t < B * tiles; ++t) {
      const int b = t / tiles, tx = (t % tiles) % tiles_x, ty = (t % tiles) / tiles_x;
      const int x_begin = tx * TILE, y_begin = ty * TILE;
      const int x_end = std::min(width, x_begin + TILE), y_end = std::min(height, y_begin + TILE);
      float T[TILE * TILE];
      float behind[TILE * TILE];  // per pixel: sum over the splats behind of w_j (f_j . dL/dpixel)
      int32_t last_of[TILE * TILE];
      int last_any = S[t];
      for (int y = y_begin; y < y_end; ++y)
        for (int x = x_begin; x < x_end; ++x) {
          const int k = (y - y_begin) * TILE + (x - x_begin);
          const size_t p = (static_cast<size_t>(b) * height + y) * width + x;
          T[k] = TF[p];
          behind[k] = 0.0f;
          last_of[k] = LAST[p];
          last_any = std::max(last_any, LAST[p]);
        }
      for (int e = last_any - 1; e >= S[t]; --e) {
        const int i = E[e];
        const int32_t* box = BOX + static_cast<size_t>(i) * 4;
        const float* mean = M + 2 * i;
        const float* q = Q + 3 * i;
        const float* f = F + static_cast<size_t>(i) * C;
        float* gi = mine + static_cast<size_t>(i) * width_g;
        const float cut = sigma_cut(O[i]);
        for (int y = std::max(box[2], y_begin); y <= std::min(box[3], y_end - 1); ++y)
          for (int x = std::max(box[0], x_begin); x <= std::min(box[1], x_end - 1); ++x) {
            const int k = (y - y_begin) * TILE + (x - x_begin);
            if (e >= last_of[k]) continue;  // behind where the pixel stopped
            float dx, dy, g;
            const float raw = raw_alpha(mean, q, O[i], cut, x, y, dx, dy, g);
            if (raw < ALPHA_MIN) continue;
            const float alpha = std::min(ALPHA_MAX, raw);
            T[k] /= (1.0f - alpha);
            const float w = alpha * T[k];
            const float* gp = G + ((static_cast<size_t>(b) * height + y) * width + x) * C;
            float fg = 0.0f;
            for (int c = 0; c < C; ++c) {
              gi[6 + c] += w * gp[c];
              fg += f[c] * gp[c];
            }
            const float d_alpha = T[k] * fg - behind[k] / (1.0f - alpha);
            behind[k] += w * fg;
            if (raw > ALPHA_MAX) continue;  // clamped: no gradient through alpha
            const float d_sigma = -d_alpha * raw;
            gi[0] -= d_sigma * (q[0] * dx + q[1] * dy);
            gi[1] -= d_sigma * (q[1] * dx + q[2] * dy);
            gi[2] += d_sigma * 0.5f * dx * dx;
            gi[3] += d_sigma * dx * dy;
            gi[4] += d_sigma * 0.5f * dy * dy;
            gi[5] += d_alpha * g;
          }
      }
    }
  }
  auto grads = torch::zeros({B * N, width_g}, features.options());
  float* out = grads.data_ptr<float>();
  const size_t size = static_cast<size_t>(B) * N * width_g;
#pragma omp parallel for
  for (int64_t k = 0; k < static_cast<int64_t>(size); ++k) {
    float s = 0.0f;
    for (int r = 0; r < threads; ++r) s += buffers[static_cast<size_t>(r) * size + k];
    out[k] = s;
  }
  grads = grads.view({B, N, width_g});
  return {grads.slice(2, 0, 2), grads.slice(2, 2, 5), grads.select(2, 5), grads.slice(2, 6, width_g)};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "composite projected splats (float32, CPU)");
  m.def("backward", &backward, "gradients of forward");
}
