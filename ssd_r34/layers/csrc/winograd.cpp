// Winograd F(2x2, 3x3) transforms for channels-last float32 maps on CPU (ssd_r34/layers/winograd.py).
// Tiles are numbered t = (n * TH + ty) * TW + tx; a transformed band of tiles [t0, t1) is a
// (16, t1 - t0, channels) float32 tensor. Out-of-image pixels read as zero.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <vector>

namespace {

// The channels-last map of a transform and its band [t0, t1) of tiles, checked: the band's
// buffer is (16, t1 - t0, channels of the map), contiguous float32.
struct Band {
  int64_t n, h, w, th, tw, channels, t0, t1;
  std::vector<float> zeros;  // what out-of-image pixels read: one pixel of zeros
  Band(const at::Tensor& map, const char* name, int64_t first, int64_t last,
       const at::Tensor& buf)
      : t0(first), t1(last) {
    TORCH_CHECK(map.device().is_cpu() && map.scalar_type() == at::kFloat && map.dim() == 4,
                name, " must be a float32 (N, C, H, W) CPU tensor");
    TORCH_CHECK(map.is_contiguous(at::MemoryFormat::ChannelsLast), name,
                " must be channels-last");
    n = map.size(0), channels = map.size(1), h = map.size(2), w = map.size(3);
    th = (h + 1) / 2, tw = (w + 1) / 2;
    zeros.assign(channels, 0.0f);
    TORCH_CHECK(0 <= t0 && t0 < t1 && t1 <= n * th * tw, "tiles [", t0, ", ", t1,
                ") out of range");
    TORCH_CHECK(buf.device().is_cpu() && buf.scalar_type() == at::kFloat
                    && buf.is_contiguous() && buf.numel() == 16 * (t1 - t0) * channels,
                "the band buffer must be a contiguous float32 (16, tiles, channels) CPU tensor");
  }
  // Elements between two of the 16 matrices of the band's buffer.
  int64_t stride() const { return (t1 - t0) * channels; }
};

// fn(t, image, tile row, tile column) for every tile t of the band, on the intra-op threads.
template <typename F>
void for_each_tile(const Band& g, const F& fn) {
  at::parallel_for(g.t0, g.t1, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t t = b0; t < b1; ++t) {
      const int64_t r = t % (g.th * g.tw);
      fn(t, t / (g.th * g.tw), r / g.tw, r % g.tw);
    }
  });
}

}  // namespace

// V = B^T d B of the 4x4 input tiles (padding 1) of tiles [t0, t1) of x, into out.
void input_transform(const at::Tensor& x, int64_t t0, int64_t t1, at::Tensor out) {
  const Band g(x, "x", t0, t1, out);
  const int64_t c = g.channels, s = g.stride();
  const float* xd = x.data_ptr<float>();
  float* od = out.data_ptr<float>();
  const float* zp = g.zeros.data();
  for_each_tile(g, [&](int64_t t, int64_t img, int64_t ty, int64_t tx) {
    const float* p[4][4];
    for (int a = 0; a < 4; ++a) {
      for (int b = 0; b < 4; ++b) {
        const int64_t yy = 2 * ty + a - 1, xx = 2 * tx + b - 1;
        p[a][b] = (yy >= 0 && yy < g.h && xx >= 0 && xx < g.w)
                      ? xd + ((img * g.h + yy) * g.w + xx) * c : zp;
      }
    }
    float* o = od + (t - t0) * c;
#pragma omp simd
    for (int64_t k = 0; k < c; ++k) {
      float rr[4][4];
      for (int b = 0; b < 4; ++b) {
        const float d0 = p[0][b][k], d1 = p[1][b][k], d2 = p[2][b][k], d3 = p[3][b][k];
        rr[0][b] = d0 - d2;
        rr[1][b] = d1 + d2;
        rr[2][b] = d2 - d1;
        rr[3][b] = d1 - d3;
      }
      for (int i = 0; i < 4; ++i) {
        o[(4 * i + 0) * s + k] = rr[i][0] - rr[i][2];
        o[(4 * i + 1) * s + k] = rr[i][1] + rr[i][2];
        o[(4 * i + 2) * s + k] = rr[i][2] - rr[i][1];
        o[(4 * i + 3) * s + k] = rr[i][1] - rr[i][3];
      }
    }
  });
}

// Y = A^T M A of tiles [t0, t1) from m (16, t1 - t0, K), into the channels-last map y.
void output_transform(const at::Tensor& m, int64_t t0, int64_t t1, at::Tensor y) {
  const Band g(y, "y", t0, t1, m);
  const int64_t k = g.channels, s = g.stride();
  const float* md = m.data_ptr<float>();
  float* yd = y.data_ptr<float>();
  for_each_tile(g, [&](int64_t t, int64_t img, int64_t ty, int64_t tx) {
    const bool down = 2 * ty + 1 < g.h, right = 2 * tx + 1 < g.w;
    float* o00 = yd + ((img * g.h + 2 * ty) * g.w + 2 * tx) * k;
    float* o01 = right ? o00 + k : nullptr;
    float* o10 = down ? o00 + g.w * k : nullptr;
    float* o11 = (down && right) ? o00 + (g.w + 1) * k : nullptr;
    const float* q = md + (t - t0) * k;
    for (int64_t e = 0; e < k; ++e) {
      float p[2][4];
      for (int j = 0; j < 4; ++j) {
        const float m0 = q[(0 + j) * s + e], m1 = q[(4 + j) * s + e];
        const float m2 = q[(8 + j) * s + e], m3 = q[(12 + j) * s + e];
        p[0][j] = m0 + m1 + m2;
        p[1][j] = m1 - m2 - m3;
      }
      o00[e] = p[0][0] + p[0][1] + p[0][2];
      if (o01) o01[e] = p[0][1] - p[0][2] - p[0][3];
      if (o10) o10[e] = p[1][0] + p[1][1] + p[1][2];
      if (o11) o11[e] = p[1][1] - p[1][2] - p[1][3];
    }
  });
}

// A dY A^T of the 2x2 output-gradient tiles [t0, t1) of the channels-last map dy, into
// out (16, t1 - t0, K).
void output_grad_transform(const at::Tensor& dy, int64_t t0, int64_t t1, at::Tensor out) {
  const Band g(dy, "dy", t0, t1, out);
  const int64_t k = g.channels, s = g.stride();
  const float* dd = dy.data_ptr<float>();
  float* od = out.data_ptr<float>();
  const float* zp = g.zeros.data();
  for_each_tile(g, [&](int64_t t, int64_t img, int64_t ty, int64_t tx) {
    const bool down = 2 * ty + 1 < g.h, right = 2 * tx + 1 < g.w;
    const float* p00 = dd + ((img * g.h + 2 * ty) * g.w + 2 * tx) * k;
    const float* p01 = right ? p00 + k : zp;
    const float* p10 = down ? p00 + g.w * k : zp;
    const float* p11 = (down && right) ? p00 + (g.w + 1) * k : zp;
    float* o = od + (t - t0) * k;
#pragma omp simd
    for (int64_t e = 0; e < k; ++e) {
      const float d[2][2] = {{p00[e], p01[e]}, {p10[e], p11[e]}};
      float q[4][2];
      for (int b = 0; b < 2; ++b) {
        q[0][b] = d[0][b];
        q[1][b] = d[0][b] + d[1][b];
        q[2][b] = d[0][b] - d[1][b];
        q[3][b] = -d[1][b];
      }
      for (int i = 0; i < 4; ++i) {
        o[(4 * i + 0) * s + e] = q[i][0];
        o[(4 * i + 1) * s + e] = q[i][0] + q[i][1];
        o[(4 * i + 2) * s + e] = q[i][0] - q[i][1];
        o[(4 * i + 3) * s + e] = -q[i][1];
      }
    }
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  mod.def("input_transform", &input_transform);
  mod.def("output_transform", &output_transform);
  mod.def("output_grad_transform", &output_grad_transform);
#ifdef SSD_R34_WINOGRAD_SHA
  // Built by setup.py: the SHA-256 (first 16 hex digits) of this file, which
  // ssd_r34/layers/winograd.py compares before using the prebuilt module.
  mod.attr("source_sha") = SSD_R34_WINOGRAD_SHA;
#endif
}
