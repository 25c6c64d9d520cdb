// PNG figures drawn with cairo: line charts, confusion matrices, image grids
// and the viridis colour map.
#include "cxr/viz/plot.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"

namespace cxr::viz {
namespace {

// matplotlib's viridis (CC0, van der Walt & Smith), 256 RGB entries, two
// triples per line.
// clang-format off
constexpr double kViridis[256 * 3] = {
    0.267004, 0.004874, 0.329415, 0.268510, 0.009605, 0.335427,
    0.269944, 0.014625, 0.341379, 0.271305, 0.019942, 0.347269,
    0.272594, 0.025563, 0.353093, 0.273809, 0.031497, 0.358853,
    0.274952, 0.037752, 0.364543, 0.276022, 0.044167, 0.370164,
    0.277018, 0.050344, 0.375715, 0.277941, 0.056324, 0.381191,
    0.278791, 0.062145, 0.386592, 0.279566, 0.067836, 0.391917,
    0.280267, 0.073417, 0.397163, 0.280894, 0.078907, 0.402329,
    0.281446, 0.084320, 0.407414, 0.281924, 0.089666, 0.412415,
    0.282327, 0.094955, 0.417331, 0.282656, 0.100196, 0.422160,
    0.282910, 0.105393, 0.426902, 0.283091, 0.110553, 0.431554,
    0.283197, 0.115680, 0.436115, 0.283229, 0.120777, 0.440584,
    0.283187, 0.125848, 0.444960, 0.283072, 0.130895, 0.449241,
    0.282884, 0.135920, 0.453427, 0.282623, 0.140926, 0.457517,
    0.282290, 0.145912, 0.461510, 0.281887, 0.150881, 0.465405,
    0.281412, 0.155834, 0.469201, 0.280868, 0.160771, 0.472899,
    0.280255, 0.165693, 0.476498, 0.279574, 0.170599, 0.479997,
    0.278826, 0.175490, 0.483397, 0.278012, 0.180367, 0.486697,
    0.277134, 0.185228, 0.489898, 0.276194, 0.190074, 0.493001,
    0.275191, 0.194905, 0.496005, 0.274128, 0.199721, 0.498911,
    0.273006, 0.204520, 0.501721, 0.271828, 0.209303, 0.504434,
    0.270595, 0.214069, 0.507052, 0.269308, 0.218818, 0.509577,
    0.267968, 0.223549, 0.512008, 0.266580, 0.228262, 0.514349,
    0.265145, 0.232956, 0.516599, 0.263663, 0.237631, 0.518762,
    0.262138, 0.242286, 0.520837, 0.260571, 0.246922, 0.522828,
    0.258965, 0.251537, 0.524736, 0.257322, 0.256130, 0.526563,
    0.255645, 0.260703, 0.528312, 0.253935, 0.265254, 0.529983,
    0.252194, 0.269783, 0.531579, 0.250425, 0.274290, 0.533103,
    0.248629, 0.278775, 0.534556, 0.246811, 0.283237, 0.535941,
    0.244972, 0.287675, 0.537260, 0.243113, 0.292092, 0.538516,
    0.241237, 0.296485, 0.539709, 0.239346, 0.300855, 0.540844,
    0.237441, 0.305202, 0.541921, 0.235526, 0.309527, 0.542944,
    0.233603, 0.313828, 0.543914, 0.231674, 0.318106, 0.544834,
    0.229739, 0.322361, 0.545706, 0.227802, 0.326594, 0.546532,
    0.225863, 0.330805, 0.547314, 0.223925, 0.334994, 0.548053,
    0.221989, 0.339161, 0.548752, 0.220057, 0.343307, 0.549413,
    0.218130, 0.347432, 0.550038, 0.216210, 0.351535, 0.550627,
    0.214298, 0.355619, 0.551184, 0.212395, 0.359683, 0.551710,
    0.210503, 0.363727, 0.552206, 0.208623, 0.367752, 0.552675,
    0.206756, 0.371758, 0.553117, 0.204903, 0.375746, 0.553533,
    0.203063, 0.379716, 0.553925, 0.201239, 0.383670, 0.554294,
    0.199430, 0.387607, 0.554642, 0.197636, 0.391528, 0.554969,
    0.195860, 0.395433, 0.555276, 0.194100, 0.399323, 0.555565,
    0.192357, 0.403199, 0.555836, 0.190631, 0.407061, 0.556089,
    0.188923, 0.410910, 0.556326, 0.187231, 0.414746, 0.556547,
    0.185556, 0.418570, 0.556753, 0.183898, 0.422383, 0.556944,
    0.182256, 0.426184, 0.557120, 0.180629, 0.429975, 0.557282,
    0.179019, 0.433756, 0.557430, 0.177423, 0.437527, 0.557565,
    0.175841, 0.441290, 0.557685, 0.174274, 0.445044, 0.557792,
    0.172719, 0.448791, 0.557885, 0.171176, 0.452530, 0.557965,
    0.169646, 0.456262, 0.558030, 0.168126, 0.459988, 0.558082,
    0.166617, 0.463708, 0.558119, 0.165117, 0.467423, 0.558141,
    0.163625, 0.471133, 0.558148, 0.162142, 0.474838, 0.558140,
    0.160665, 0.478540, 0.558115, 0.159194, 0.482237, 0.558073,
    0.157729, 0.485932, 0.558013, 0.156270, 0.489624, 0.557936,
    0.154815, 0.493313, 0.557840, 0.153364, 0.497000, 0.557724,
    0.151918, 0.500685, 0.557587, 0.150476, 0.504369, 0.557430,
    0.149039, 0.508051, 0.557250, 0.147607, 0.511733, 0.557049,
    0.146180, 0.515413, 0.556823, 0.144759, 0.519093, 0.556572,
    0.143343, 0.522773, 0.556295, 0.141935, 0.526453, 0.555991,
    0.140536, 0.530132, 0.555659, 0.139147, 0.533812, 0.555298,
    0.137770, 0.537492, 0.554906, 0.136408, 0.541173, 0.554483,
    0.135066, 0.544853, 0.554029, 0.133743, 0.548535, 0.553541,
    0.132444, 0.552216, 0.553018, 0.131172, 0.555899, 0.552459,
    0.129933, 0.559582, 0.551864, 0.128729, 0.563265, 0.551229,
    0.127568, 0.566949, 0.550556, 0.126453, 0.570633, 0.549841,
    0.125394, 0.574318, 0.549086, 0.124395, 0.578002, 0.548287,
    0.123463, 0.581687, 0.547445, 0.122606, 0.585371, 0.546557,
    0.121831, 0.589055, 0.545623, 0.121148, 0.592739, 0.544641,
    0.120565, 0.596422, 0.543611, 0.120092, 0.600104, 0.542530,
    0.119738, 0.603785, 0.541400, 0.119512, 0.607464, 0.540218,
    0.119423, 0.611141, 0.538982, 0.119483, 0.614817, 0.537692,
    0.119699, 0.618490, 0.536347, 0.120081, 0.622161, 0.534946,
    0.120638, 0.625828, 0.533488, 0.121380, 0.629492, 0.531973,
    0.122312, 0.633153, 0.530398, 0.123444, 0.636809, 0.528763,
    0.124780, 0.640461, 0.527068, 0.126326, 0.644107, 0.525311,
    0.128087, 0.647749, 0.523491, 0.130067, 0.651384, 0.521608,
    0.132268, 0.655014, 0.519661, 0.134692, 0.658636, 0.517649,
    0.137339, 0.662252, 0.515571, 0.140210, 0.665859, 0.513427,
    0.143303, 0.669459, 0.511215, 0.146616, 0.673050, 0.508936,
    0.150148, 0.676631, 0.506589, 0.153894, 0.680203, 0.504172,
    0.157851, 0.683765, 0.501686, 0.162016, 0.687316, 0.499129,
    0.166383, 0.690856, 0.496502, 0.170948, 0.694384, 0.493803,
    0.175707, 0.697900, 0.491033, 0.180653, 0.701402, 0.488189,
    0.185783, 0.704891, 0.485273, 0.191090, 0.708366, 0.482284,
    0.196571, 0.711827, 0.479221, 0.202219, 0.715272, 0.476084,
    0.208030, 0.718701, 0.472873, 0.214000, 0.722114, 0.469588,
    0.220124, 0.725509, 0.466226, 0.226397, 0.728888, 0.462789,
    0.232815, 0.732247, 0.459277, 0.239374, 0.735588, 0.455688,
    0.246070, 0.738910, 0.452024, 0.252899, 0.742211, 0.448284,
    0.259857, 0.745492, 0.444467, 0.266941, 0.748751, 0.440573,
    0.274149, 0.751988, 0.436601, 0.281477, 0.755203, 0.432552,
    0.288921, 0.758394, 0.428426, 0.296479, 0.761561, 0.424223,
    0.304148, 0.764704, 0.419943, 0.311925, 0.767822, 0.415586,
    0.319809, 0.770914, 0.411152, 0.327796, 0.773980, 0.406640,
    0.335885, 0.777018, 0.402049, 0.344074, 0.780029, 0.397381,
    0.352360, 0.783011, 0.392636, 0.360741, 0.785964, 0.387814,
    0.369214, 0.788888, 0.382914, 0.377779, 0.791781, 0.377939,
    0.386433, 0.794644, 0.372886, 0.395174, 0.797475, 0.367757,
    0.404001, 0.800275, 0.362552, 0.412913, 0.803041, 0.357269,
    0.421908, 0.805774, 0.351910, 0.430983, 0.808473, 0.346476,
    0.440137, 0.811138, 0.340967, 0.449368, 0.813768, 0.335384,
    0.458674, 0.816363, 0.329727, 0.468053, 0.818921, 0.323998,
    0.477504, 0.821444, 0.318195, 0.487026, 0.823929, 0.312321,
    0.496615, 0.826376, 0.306377, 0.506271, 0.828786, 0.300362,
    0.515992, 0.831158, 0.294279, 0.525776, 0.833491, 0.288127,
    0.535621, 0.835785, 0.281908, 0.545524, 0.838039, 0.275626,
    0.555484, 0.840254, 0.269281, 0.565498, 0.842430, 0.262877,
    0.575563, 0.844566, 0.256415, 0.585678, 0.846661, 0.249897,
    0.595839, 0.848717, 0.243329, 0.606045, 0.850733, 0.236712,
    0.616293, 0.852709, 0.230052, 0.626579, 0.854645, 0.223353,
    0.636902, 0.856542, 0.216620, 0.647257, 0.858400, 0.209861,
    0.657642, 0.860219, 0.203082, 0.668054, 0.861999, 0.196293,
    0.678489, 0.863742, 0.189503, 0.688944, 0.865448, 0.182725,
    0.699415, 0.867117, 0.175971, 0.709898, 0.868751, 0.169257,
    0.720391, 0.870350, 0.162603, 0.730889, 0.871916, 0.156029,
    0.741388, 0.873449, 0.149561, 0.751884, 0.874951, 0.143228,
    0.762373, 0.876424, 0.137064, 0.772852, 0.877868, 0.131109,
    0.783315, 0.879285, 0.125405, 0.793760, 0.880678, 0.120005,
    0.804182, 0.882046, 0.114965, 0.814576, 0.883393, 0.110347,
    0.824940, 0.884720, 0.106217, 0.835270, 0.886029, 0.102646,
    0.845561, 0.887322, 0.099702, 0.855810, 0.888601, 0.097452,
    0.866013, 0.889868, 0.095953, 0.876168, 0.891125, 0.095250,
    0.886271, 0.892374, 0.095374, 0.896320, 0.893616, 0.096335,
    0.906311, 0.894855, 0.098125, 0.916242, 0.896091, 0.100717,
    0.926106, 0.897330, 0.104071, 0.935904, 0.898570, 0.108131,
    0.945636, 0.899815, 0.112838, 0.955300, 0.901065, 0.118128,
    0.964894, 0.902323, 0.123941, 0.974417, 0.903590, 0.130215,
    0.983868, 0.904867, 0.136897, 0.993248, 0.906157, 0.143936,
};
// clang-format on

constexpr double kPi = 3.14159265358979323846;
constexpr char kFont[] = "DejaVu Sans";
constexpr int kMaxSurfaceSide = 32767;  // cairo's limit for image surfaces

struct Rgb {
  double r, g, b;
};

// matplotlib's default "tab10" palette, so figures look familiar.
constexpr Rgb kPalette[] = {{0.122, 0.467, 0.706}, {1.000, 0.498, 0.055},
                            {0.173, 0.627, 0.173}, {0.839, 0.153, 0.157},
                            {0.580, 0.404, 0.741}, {0.549, 0.337, 0.294},
                            {0.890, 0.467, 0.761}, {0.498, 0.498, 0.498},
                            {0.737, 0.741, 0.133}, {0.090, 0.745, 0.812}};
constexpr Rgb kText = {0.13, 0.13, 0.13};
constexpr Rgb kMuted = {0.42, 0.42, 0.42};
constexpr Rgb kGrid = {0.91, 0.91, 0.91};
constexpr Rgb kFrame = {0.55, 0.55, 0.55};

struct SurfaceDeleter {
  void operator()(cairo_surface_t* s) const { cairo_surface_destroy(s); }
};
struct ContextDeleter {
  void operator()(cairo_t* c) const { cairo_destroy(c); }
};
using Surface = std::unique_ptr<cairo_surface_t, SurfaceDeleter>;
using Context = std::unique_ptr<cairo_t, ContextDeleter>;

std::string fmt(double v) {
  std::ostringstream ss;
  ss << v;
  return ss.str();
}

std::string shape_of(const torch::Tensor& t) {
  std::ostringstream ss;
  ss << t.sizes();
  return ss.str();
}

Surface new_surface(int width, int height, const std::string& png_path) {
  if (width < 1 || height < 1 || width > kMaxSurfaceSide ||
      height > kMaxSurfaceSide) {
    throw ConfigError("figure '" + png_path + "' would be " +
                      std::to_string(width) + "x" + std::to_string(height) +
                      " px; at most " + std::to_string(kMaxSurfaceSide) +
                      " px per side are possible (use fewer charts or "
                      "tiles, or smaller ones)");
  }
  Surface s(cairo_image_surface_create(CAIRO_FORMAT_ARGB32, width, height));
  if (cairo_surface_status(s.get()) != CAIRO_STATUS_SUCCESS) {
    throw IoError(
        "cannot allocate a " + std::to_string(width) + "x" +
        std::to_string(height) + " px image for '" + png_path +
        "': " + cairo_status_to_string(cairo_surface_status(s.get())));
  }
  return s;
}

Context new_context(cairo_surface_t* surface) {
  Context cr(cairo_create(surface));
  cairo_set_source_rgb(cr.get(), 1, 1, 1);
  cairo_paint(cr.get());
  return cr;
}

void write_png_atomic(cairo_t* cr,
                      cairo_surface_t* surface,
                      const std::string& png_path) {
  if (cairo_status(cr) != CAIRO_STATUS_SUCCESS) {
    throw IoError("cannot draw '" + png_path +
                  "': " + cairo_status_to_string(cairo_status(cr)));
  }
  cairo_surface_flush(surface);
  write_file_atomic(png_path, [&](const std::filesystem::path& tmp) {
    const cairo_status_t st = cairo_surface_write_to_png(surface, tmp.c_str());
    if (st != CAIRO_STATUS_SUCCESS) {
      throw IoError("cannot write '" + png_path +
                    "': " + cairo_status_to_string(st) +
                    " (is the folder writable and the disk not full?)");
    }
  });
}

void set_color(cairo_t* cr, const Rgb& c, double alpha = 1.0) {
  cairo_set_source_rgba(cr, c.r, c.g, c.b, alpha);
}

void set_font(cairo_t* cr, double size, bool bold = false) {
  cairo_select_font_face(
      cr, kFont, CAIRO_FONT_SLANT_NORMAL,
      bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

double text_width(cairo_t* cr, const std::string& s) {
  cairo_text_extents_t e;
  cairo_text_extents(cr, s.c_str(), &e);
  return e.x_advance;
}

enum class Align { kStart, kCenter, kEnd };

// Draws one line with (x, y) as anchor. Vertically kStart is the top of the
// capitals, kCenter their middle and kEnd the baseline, so labels line up
// the same whatever letters they contain.
void draw_text(
    cairo_t* cr, const std::string& s, double x, double y, Align h, Align v) {
  cairo_matrix_t m;
  cairo_get_font_matrix(cr, &m);
  const double cap = 0.73 * m.yy;  // DejaVu's cap height is 0.73 em
  const double w = text_width(cr, s);
  const double bx = h == Align::kStart    ? x
                    : h == Align::kCenter ? x - w / 2
                                          : x - w;
  const double by = v == Align::kStart    ? y + cap
                    : v == Align::kCenter ? y + cap / 2
                                          : y;
  cairo_move_to(cr, bx, by);
  cairo_show_text(cr, s.c_str());
}

// Text reading bottom to top, centred on (x, y).
void draw_text_vertical(cairo_t* cr, const std::string& s, double x, double y) {
  cairo_save(cr);
  cairo_translate(cr, x, y);
  cairo_rotate(cr, -kPi / 2);
  draw_text(cr, s, 0, 0, Align::kCenter, Align::kCenter);
  cairo_restore(cr);
}

// Shortens `s` with an ellipsis until it fits `max_width`, cutting whole
// UTF-8 code points.
std::string fit_text(cairo_t* cr, const std::string& s, double max_width) {
  if (text_width(cr, s) <= max_width) return s;
  const std::string ellipsis = "\xE2\x80\xA6";
  std::string t = s;
  while (!t.empty()) {
    size_t cut = t.size() - 1;
    while (cut > 0 && (static_cast<unsigned char>(t[cut]) & 0xC0) == 0x80) {
      --cut;
    }
    t.erase(cut);
    while (!t.empty() && t.back() == ' ') t.pop_back();
    if (text_width(cr, t + ellipsis) <= max_width) return t + ellipsis;
  }
  return text_width(cr, ellipsis) <= max_width ? ellipsis : "";
}

// Snaps a coordinate to a pixel centre so 1 px lines stay sharp.
double crisp(double v) {
  return std::floor(v) + 0.5;
}

// Tick label with as many decimals as the step needs ("0.25", "10", "1e+07").
std::string format_tick(double v, double step) {
  if (std::abs(v) < std::abs(step) * 1e-9) v = 0;  // no "-0" or "1e-17"
  const double mag = std::floor(std::log10(step) + 1e-9);
  int decimals = std::max(0, static_cast<int>(-mag));
  const double mantissa = step / std::pow(10.0, mag);
  if (mag <= 0 && std::abs(mantissa - 2.5) < 1e-6) ++decimals;
  char buf[64];
  if (std::abs(v) >= 1e6 || decimals > 6) {
    std::snprintf(buf, sizeof(buf), "%g", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  }
  return buf;
}

// A tick step m * 10^e. Ticks are computed as k * m / 10^-e so that they
// are the doubles nearest to the decimals they print as (0.3, not
// 0.30000000000000004 from 3 * 0.1).
struct Step {
  double mantissa = 1;
  int exponent = 0;
  double tick(double k) const {
    return exponent >= 0 ? k * mantissa * std::pow(10.0, exponent)
                         : k * mantissa / std::pow(10.0, -exponent);
  }
  double value() const { return tick(1); }
};

// `integer` rules out fractional steps (epochs 1..3 should not get 1.25).
Step nice_step(double lo, double hi, int max_ticks, bool integer = false) {
  const int base = static_cast<int>(
      std::floor(std::log10((hi - lo) / std::max(max_ticks, 2))));
  constexpr std::pair<double, int> kSteps[] = {
      {1, 0}, {2, 0}, {25, -1}, {5, 0}, {1, 1}, {2, 1}, {25, 0}, {5, 1}};
  for (const auto& [mantissa, offset] : kSteps) {
    const Step s{mantissa, base + offset};
    if (integer && s.exponent < 0) continue;
    const double step = s.value();
    const double count =
        std::floor(hi / step + 1e-9) - std::ceil(lo / step - 1e-9) + 1;
    if (count <= max_ticks) return s;
  }
  return {1, base + 2};
}

// Multiples of `step` in [lo, hi]. The counter is an int because k + 1 == k
// for huge k (1e9 +- 1e-7 has k ~ 1e17).
std::vector<double> ticks_of(const Step& step,
                             double lo,
                             double hi,
                             int max_ticks) {
  const double first = std::ceil(lo / step.value() - 1e-9);
  const double last = std::floor(hi / step.value() + 1e-9);
  std::vector<double> ticks;
  for (int i = 0; first + i <= last && i < max_ticks; ++i) {
    const double v = step.tick(first + i);
    ticks.push_back(v == 0 ? 0.0 : v);  // no negative zero
  }
  return ticks;
}

struct Axis {
  double lo = 0, hi = 1;
  double step = 0.2;
  std::vector<double> ticks;
};

// One axis: explicit limits win; free sides follow the finite data and are
// widened when the data are constant.
Axis make_axis(double data_lo,
               double data_hi,
               std::optional<double> opt_lo,
               std::optional<double> opt_hi,
               int max_ticks,
               bool integer,
               const std::string& what) {
  for (const auto& o : {opt_lo, opt_hi}) {
    if (o && !std::isfinite(*o)) {
      throw ConfigError(what + ": axis limit " + fmt(*o) +
                        " is not a finite number");
    }
  }
  if (opt_lo && opt_hi && !(*opt_lo < *opt_hi)) {
    throw ConfigError(what + ": axis min " + fmt(*opt_lo) +
                      " is not below max " + fmt(*opt_hi));
  }
  const bool has_data = data_lo <= data_hi;
  double lo = opt_lo.value_or(has_data ? data_lo : 0.0);
  double hi = opt_hi.value_or(has_data ? data_hi : 1.0);
  if (!(lo < hi)) {
    const double anchor = opt_lo ? lo : hi;
    const double pad = anchor == 0 ? 0.5 : std::abs(anchor) * 0.1;
    if (opt_lo) {
      hi = lo + pad;
    } else if (opt_hi) {
      lo = hi - pad;
    } else {
      lo -= pad;
      hi += pad;
    }
  }
  if (!std::isfinite(hi - lo)) {
    throw ConfigError(what + ": values up to " + fmt(std::max(-lo, hi)) +
                      " are too large to plot");
  }
  // Like matplotlib: free sides get a small margin so that extreme points
  // are not drawn on the frame; ticks are the nice values inside.
  const double margin = 0.03 * (hi - lo);
  if (!opt_lo) lo -= margin;
  if (!opt_hi) hi += margin;
  const Step step = nice_step(lo, hi, max_ticks, integer && hi - lo >= 1);
  Axis a;
  a.lo = lo;
  a.hi = hi;
  a.step = step.value();
  a.ticks = ticks_of(step, lo, hi, max_ticks);
  return a;
}

struct Pt {
  double x, y;
};

// The drawable pieces of a series: runs of finite points (a NaN breaks the
// line), with the corners of a step function inserted.
std::vector<std::vector<Pt>> polylines(const Series& s) {
  std::vector<std::vector<Pt>> out;
  std::vector<Pt> cur;
  for (size_t i = 0; i < s.x.size(); ++i) {
    if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
      if (s.steps && !cur.empty()) cur.push_back({s.x[i], cur.back().y});
      cur.push_back({s.x[i], s.y[i]});
    } else if (!cur.empty()) {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

// Points every few pixels along a pixel-space polyline; used to find the
// legend position that hides the least of the data.
void sample_polyline(const std::vector<Pt>& line, std::vector<Pt>* out) {
  if (line.size() == 1) out->push_back(line[0]);
  for (size_t i = 1; i < line.size(); ++i) {
    const double dx = line[i].x - line[i - 1].x;
    const double dy = line[i].y - line[i - 1].y;
    const int n = std::min(
        2000, 1 + static_cast<int>(std::sqrt(dx * dx + dy * dy) / 3.0));
    for (int k = 0; k <= n; ++k) {
      const double t = static_cast<double>(k) / n;
      out->push_back({line[i - 1].x + t * dx, line[i - 1].y + t * dy});
    }
  }
}

void rounded_rect(
    cairo_t* cr, double x, double y, double w, double h, double r) {
  cairo_new_sub_path(cr);
  cairo_arc(cr, x + w - r, y + r, r, -kPi / 2, 0);
  cairo_arc(cr, x + w - r, y + h - r, r, 0, kPi / 2);
  cairo_arc(cr, x + r, y + h - r, r, kPi / 2, kPi);
  cairo_arc(cr, x + r, y + r, r, kPi, 3 * kPi / 2);
  cairo_close_path(cr);
}

void draw_legend(cairo_t* cr,
                 const LineChart& chart,
                 const std::vector<std::vector<Pt>>& pixel_lines,
                 double left,
                 double top,
                 double right,
                 double bottom) {
  std::vector<size_t> named;
  for (size_t i = 0; i < chart.series.size(); ++i) {
    if (!chart.series[i].name.empty()) named.push_back(i);
  }
  if (named.empty()) return;
  set_font(cr, 11.5);
  const double pad = 8, row = 18, swatch = 26, margin = 8;
  const double max_text =
      std::max(40.0, right - left - 2 * margin - 2 * pad - swatch - 7);
  std::vector<std::string> names;
  double text_w = 0;
  for (size_t i : named) {
    names.push_back(fit_text(cr, chart.series[i].name, max_text));
    text_w = std::max(text_w, text_width(cr, names.back()));
  }
  const double box_w = pad + swatch + 7 + text_w + pad;
  const double box_h = 2 * pad + named.size() * row - 6;

  // matplotlib's "best": fewest covered data samples, corners in the order
  // upper right, upper left, lower left, lower right.
  const std::array<Pt, 4> corners = {
      {{right - margin - box_w, top + margin},
       {left + margin, top + margin},
       {left + margin, bottom - margin - box_h},
       {right - margin - box_w, bottom - margin - box_h}}};
  std::vector<Pt> samples;
  for (const auto& line : pixel_lines) sample_polyline(line, &samples);
  Pt best = corners[0];
  size_t best_hits = std::numeric_limits<size_t>::max();
  for (const Pt& c : corners) {
    size_t hits = 0;
    for (const Pt& p : samples) {
      hits += p.x >= c.x - 3 && p.x <= c.x + box_w + 3 && p.y >= c.y - 3 &&
              p.y <= c.y + box_h + 3;
    }
    if (hits < best_hits) {
      best_hits = hits;
      best = c;
    }
  }

  rounded_rect(cr, crisp(best.x), crisp(best.y), std::round(box_w),
               std::round(box_h), 4);
  cairo_set_source_rgba(cr, 1, 1, 1, 0.88);
  cairo_fill_preserve(cr);
  set_color(cr, {0.8, 0.8, 0.8});
  cairo_set_line_width(cr, 1);
  cairo_stroke(cr);
  for (size_t k = 0; k < named.size(); ++k) {
    const Series& s = chart.series[named[k]];
    const double cy = best.y + pad + row * k + 6;
    set_color(cr, kPalette[named[k] % std::size(kPalette)]);
    cairo_set_line_width(cr, 2.2);
    if (s.dashed) {
      const double dash[] = {6, 3};
      cairo_set_dash(cr, dash, 2, 0);
    }
    cairo_move_to(cr, best.x + pad, cy);
    cairo_line_to(cr, best.x + pad + swatch, cy);
    cairo_stroke(cr);
    cairo_set_dash(cr, nullptr, 0, 0);
    set_color(cr, kText);
    draw_text(cr, names[k], best.x + pad + swatch + 7, cy, Align::kStart,
              Align::kCenter);
  }
}

// Draws `chart` into the box (ox, oy, chart.width, chart.height).
void draw_line_chart(cairo_t* cr,
                     const LineChart& chart,
                     double ox,
                     double oy,
                     const std::string& png_path) {
  const std::string what =
      "line chart '" + (chart.title.empty() ? png_path : chart.title) + "'";
  if (chart.width < 160 || chart.width > 8000 || chart.height < 160 ||
      chart.height > 8000) {
    throw ConfigError(what + ": size " + std::to_string(chart.width) + "x" +
                      std::to_string(chart.height) +
                      " px is outside 160..8000 px per side");
  }
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  double y_lo = x_lo, y_hi = -x_lo;
  bool x_integer = true, y_integer = true;
  for (const Series& s : chart.series) {
    if (s.x.size() != s.y.size()) {
      throw ConfigError(what + ": series '" + s.name + "' has " +
                        std::to_string(s.x.size()) + " x values but " +
                        std::to_string(s.y.size()) + " y values");
    }
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      x_lo = std::min(x_lo, s.x[i]);
      x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, s.y[i]);
      y_hi = std::max(y_hi, s.y[i]);
      x_integer = x_integer && s.x[i] == std::round(s.x[i]);
      y_integer = y_integer && s.y[i] == std::round(s.y[i]);
    }
  }
  const bool has_data = x_lo <= x_hi;
  const double w = chart.width, h = chart.height;
  const double pad = 14, tick_font = 11, label_font = 12.5;

  const double top = oy + pad + (chart.title.empty() ? 4 : 28);
  const double bottom =
      oy + h - pad - 20 - (chart.x_label.empty() ? 0 : label_font + 9);
  const int y_ticks = std::clamp(static_cast<int>((bottom - top) / 38), 3, 9);
  const Axis ya =
      make_axis(y_lo, y_hi, chart.y_min, chart.y_max, y_ticks, y_integer, what);
  set_font(cr, tick_font);
  double y_tick_w = 0;
  for (double t : ya.ticks) {
    y_tick_w = std::max(y_tick_w, text_width(cr, format_tick(t, ya.step)));
  }
  const double left =
      ox + pad + (chart.y_label.empty() ? 0 : label_font + 9) + y_tick_w + 9;
  double right = ox + w - pad - 4;
  int x_ticks = std::clamp(static_cast<int>((right - left) / 65), 3, 10);
  Axis xa;
  for (;;) {
    xa = make_axis(x_lo, x_hi, chart.x_min, chart.x_max, x_ticks, x_integer,
                   what);
    double widest = 0;
    for (double t : xa.ticks) {
      widest = std::max(widest, text_width(cr, format_tick(t, xa.step)));
    }
    const double spacing = xa.step / (xa.hi - xa.lo) * (right - left);
    if (widest + 12 <= spacing || x_ticks <= 2) break;
    --x_ticks;
  }
  if (!xa.ticks.empty()) {
    // The last x label is centred on its tick; keep it inside the figure.
    const double half =
        text_width(cr, format_tick(xa.ticks.back(), xa.step)) / 2;
    right = std::min(right, ox + w - 4 - half);
  }
  if (right - left < 40 || bottom - top < 40) {
    throw ConfigError(what + ": " + std::to_string(chart.width) + "x" +
                      std::to_string(chart.height) +
                      " px leaves no room for the plot; make it larger");
  }

  // Explicit limits map to a few pixels inside the frame, so curves along
  // them (ROC curves at 0 and 1) are not hidden by it; free sides already
  // have a margin.
  const double inset = 6;
  const double dl = left + (chart.x_min ? inset : 0);
  const double dr = right - (chart.x_max ? inset : 0);
  const double dt = top + (chart.y_max ? inset : 0);
  const double db = bottom - (chart.y_min ? inset : 0);
  auto px = [&](double x) {
    return dl + (x - xa.lo) / (xa.hi - xa.lo) * (dr - dl);
  };
  auto py = [&](double y) {
    return db - (y - ya.lo) / (ya.hi - ya.lo) * (db - dt);
  };

  cairo_set_line_width(cr, 1);
  set_color(cr, kGrid);
  for (double t : xa.ticks) {
    cairo_move_to(cr, crisp(px(t)), top);
    cairo_line_to(cr, crisp(px(t)), bottom);
  }
  for (double t : ya.ticks) {
    cairo_move_to(cr, left, crisp(py(t)));
    cairo_line_to(cr, right, crisp(py(t)));
  }
  cairo_stroke(cr);

  cairo_save(cr);
  cairo_rectangle(cr, left, top, right - left, bottom - top);
  cairo_clip(cr);
  std::vector<std::vector<Pt>> pixel_lines;
  if (chart.diagonal) {
    const double lo = std::max(xa.lo, ya.lo), hi = std::min(xa.hi, ya.hi);
    if (lo < hi) {
      const double dash[] = {5, 4};
      cairo_set_dash(cr, dash, 2, 0);
      cairo_set_line_width(cr, 1.2);
      set_color(cr, {0.62, 0.62, 0.62});
      cairo_move_to(cr, px(lo), py(lo));
      cairo_line_to(cr, px(hi), py(hi));
      cairo_stroke(cr);
      pixel_lines.push_back({{px(lo), py(lo)}, {px(hi), py(hi)}});
    }
  }
  for (double m : chart.x_markers) {
    if (!std::isfinite(m) || m < xa.lo || m > xa.hi) continue;
    const double dash[] = {2, 3};
    cairo_set_dash(cr, dash, 2, 0);
    cairo_set_line_width(cr, 1.2);
    set_color(cr, {0.35, 0.35, 0.35});
    cairo_move_to(cr, crisp(px(m)), top);
    cairo_line_to(cr, crisp(px(m)), bottom);
    cairo_stroke(cr);
  }
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const Series& s = chart.series[i];
    set_color(cr, kPalette[i % std::size(kPalette)]);
    if (s.dashed) {
      const double dash[] = {7, 4};
      cairo_set_dash(cr, dash, 2, 0);
    } else {
      cairo_set_dash(cr, nullptr, 0, 0);
    }
    cairo_set_line_width(cr, 2);
    for (const auto& line : polylines(s)) {
      std::vector<Pt> pl;
      for (const Pt& p : line) pl.push_back({px(p.x), py(p.y)});
      if (pl.size() == 1) {
        // A point between two NaNs would otherwise be invisible.
        cairo_arc(cr, pl[0].x, pl[0].y, 2.6, 0, 2 * kPi);
        cairo_fill(cr);
      } else {
        cairo_move_to(cr, pl[0].x, pl[0].y);
        for (size_t k = 1; k < pl.size(); ++k) {
          cairo_line_to(cr, pl[k].x, pl[k].y);
        }
        cairo_stroke(cr);
      }
      pixel_lines.push_back(std::move(pl));
    }
  }
  cairo_set_dash(cr, nullptr, 0, 0);
  cairo_restore(cr);

  if (!has_data) {
    set_font(cr, 13);
    set_color(cr, kMuted);
    draw_text(cr, "no data", (left + right) / 2, (top + bottom) / 2,
              Align::kCenter, Align::kCenter);
  }

  cairo_set_line_width(cr, 1);
  set_color(cr, kFrame);
  cairo_rectangle(cr, crisp(left), crisp(top),
                  std::round(right) - std::round(left),
                  std::round(bottom) - std::round(top));
  for (double t : xa.ticks) {
    cairo_move_to(cr, crisp(px(t)), crisp(bottom));
    cairo_line_to(cr, crisp(px(t)), crisp(bottom) + 4);
  }
  for (double t : ya.ticks) {
    cairo_move_to(cr, crisp(left), crisp(py(t)));
    cairo_line_to(cr, crisp(left) - 4, crisp(py(t)));
  }
  cairo_stroke(cr);

  set_font(cr, tick_font);
  set_color(cr, kText);
  for (double t : xa.ticks) {
    draw_text(cr, format_tick(t, xa.step), px(t), bottom + 8, Align::kCenter,
              Align::kStart);
  }
  for (double t : ya.ticks) {
    draw_text(cr, format_tick(t, ya.step), left - 7, py(t), Align::kEnd,
              Align::kCenter);
  }
  set_font(cr, label_font);
  if (!chart.x_label.empty()) {
    draw_text(cr, fit_text(cr, chart.x_label, right - left), (left + right) / 2,
              bottom + 8 + tick_font + 10, Align::kCenter, Align::kStart);
  }
  if (!chart.y_label.empty()) {
    draw_text_vertical(cr, fit_text(cr, chart.y_label, bottom - top),
                       ox + pad + label_font / 2, (top + bottom) / 2);
  }
  if (!chart.title.empty()) {
    set_font(cr, 14.5, true);
    draw_text(cr, fit_text(cr, chart.title, w - 2 * pad), (left + right) / 2,
              oy + pad, Align::kCenter, Align::kStart);
  }
  draw_legend(cr, chart, pixel_lines, left, top, right, bottom);
}

// Blues-like ramp for the confusion matrix: white to dark blue.
Rgb blues(double t) {
  constexpr Rgb stops[] = {{0.969, 0.984, 1.000},
                           {0.776, 0.859, 0.937},
                           {0.420, 0.682, 0.839},
                           {0.129, 0.443, 0.710},
                           {0.031, 0.188, 0.420}};
  t = std::clamp(t, 0.0, 1.0) * 4;
  const int i = std::min(3, static_cast<int>(t));
  const double f = t - i;
  return {stops[i].r + f * (stops[i + 1].r - stops[i].r),
          stops[i].g + f * (stops[i + 1].g - stops[i].g),
          stops[i].b + f * (stops[i + 1].b - stops[i].b)};
}

// [H, W], [1, H, W] or [3, H, W] (float in [0, 1] or uint8) as an opaque
// cairo surface of the image's own size.
Surface tensor_to_surface(const torch::Tensor& image,
                          const std::string& what,
                          const std::string& png_path) {
  if (!image.defined()) throw ConfigError(what + " has no image");
  torch::Tensor t = image.detach().to(torch::kCPU);
  t = t.scalar_type() == torch::kByte ? t.to(torch::kFloat).div(255)
                                      : t.to(torch::kFloat);
  if (t.dim() == 2) t = t.unsqueeze(0);
  if (t.dim() != 3 || (t.size(0) != 1 && t.size(0) != 3) || t.size(1) < 1 ||
      t.size(2) < 1) {
    throw ConfigError(what +
                      ": expected an [H, W] gray or [3, H, W] RGB "
                      "image, got " +
                      shape_of(image));
  }
  t = t.expand({3, t.size(1), t.size(2)});
  const torch::Tensor bytes = torch::nan_to_num(t, 0.0)
                                  .clamp(0, 1)
                                  .mul(255)
                                  .round()
                                  .to(torch::kByte)
                                  .permute({1, 2, 0})
                                  .contiguous();
  const int h = static_cast<int>(bytes.size(0));
  const int w = static_cast<int>(bytes.size(1));
  Surface s = new_surface(w, h, png_path);
  cairo_surface_flush(s.get());
  unsigned char* data = cairo_image_surface_get_data(s.get());
  const int stride = cairo_image_surface_get_stride(s.get());
  const uint8_t* src = bytes.data_ptr<uint8_t>();
  for (int y = 0; y < h; ++y) {
    // ARGB32 is a native-endian 32-bit word per pixel.
    auto* row =
        reinterpret_cast<uint32_t*>(data + static_cast<ptrdiff_t>(y) * stride);
    for (int x = 0; x < w; ++x) {
      const uint8_t* p = src + (static_cast<ptrdiff_t>(y) * w + x) * 3;
      row[x] = 0xFF000000u | (uint32_t{p[0]} << 16) | (uint32_t{p[1]} << 8) |
               uint32_t{p[2]};
    }
  }
  cairo_surface_mark_dirty(s.get());
  return s;
}

// Paints `image` scaled into the rectangle (x, y, w, h).
void paint_scaled(cairo_t* cr,
                  cairo_surface_t* image,
                  double x,
                  double y,
                  double w,
                  double h) {
  const int iw = cairo_image_surface_get_width(image);
  const int ih = cairo_image_surface_get_height(image);
  cairo_save(cr);
  cairo_rectangle(cr, x, y, w, h);
  cairo_clip(cr);
  cairo_translate(cr, x, y);
  cairo_scale(cr, w / iw, h / ih);
  cairo_set_source_surface(cr, image, 0, 0);
  cairo_pattern_t* pattern = cairo_get_source(cr);
  // GOOD filters properly when shrinking (no aliasing of X-ray texture) and
  // interpolates when enlarging small heat maps; PAD avoids dark borders.
  cairo_pattern_set_filter(pattern, CAIRO_FILTER_GOOD);
  cairo_pattern_set_extend(pattern, CAIRO_EXTEND_PAD);
  cairo_paint(cr);
  cairo_restore(cr);
}

std::vector<std::string> caption_lines(const std::string& caption) {
  std::vector<std::string> lines;
  std::stringstream ss(caption);
  std::string line;
  while (std::getline(ss, line)) {
    if (lines.size() < 2) {
      lines.push_back(line);
    } else {
      lines[1] += " " + line;  // more than two lines: the rest is elided
    }
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

const torch::Tensor& viridis_table_cpu() {
  static const torch::Tensor table =
      torch::from_blob(const_cast<double*>(kViridis), {256, 3}, torch::kDouble)
          .to(torch::kFloat);
  return table;
}

void check_unit_range(const torch::Tensor& t, const std::string& name) {
  const torch::Tensor f = t.detach().to(torch::kFloat);
  if (f.numel() == 0) {
    throw ConfigError("overlay_heatmap: the " + name + " is empty");
  }
  if (f.isnan().any().item<bool>()) {
    throw ConfigError("overlay_heatmap: the " + name +
                      " contains NaN; check the model output");
  }
  const double lo = f.min().item<double>(), hi = f.max().item<double>();
  // A little slack for values such as 1.0000001 from normalisation.
  if (lo < -1e-5 || hi > 1 + 1e-5) {
    throw ConfigError("overlay_heatmap: the " + name + " has values in [" +
                      fmt(lo) + ", " + fmt(hi) +
                      "], expected [0, 1]; normalise it first");
  }
}

torch::Tensor as_plane(const torch::Tensor& t, const std::string& name) {
  if (!t.defined()) {
    throw ConfigError("overlay_heatmap: the " + name + " is undefined");
  }
  if (t.dim() == 3 && t.size(0) == 1) return t[0];
  if (t.dim() != 2) {
    throw ConfigError("overlay_heatmap: the " + name +
                      " must be [H, W] (or [1, H, W]), got " + shape_of(t));
  }
  return t;
}

}  // namespace

torch::Tensor render_text_page(const std::vector<std::string>& lines,
                               int width,
                               int height,
                               double font_size) {
  if (width < 8 || height < 8 || width > 8000 || height > 8000) {
    throw ConfigError("render_text_page: " + std::to_string(width) + "x" +
                      std::to_string(height) +
                      " px is outside 8..8000 px per side");
  }
  if (!(font_size > 0)) {
    throw ConfigError("render_text_page: font size must be positive");
  }
  Surface s(cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height));
  if (cairo_surface_status(s.get()) != CAIRO_STATUS_SUCCESS) {
    throw IoError("render_text_page: cannot allocate a " +
                  std::to_string(width) + "x" + std::to_string(height) +
                  " px page");
  }
  {
    Context cr = new_context(s.get());
    cairo_set_source_rgb(cr.get(), 0, 0, 0);
    set_font(cr.get(), font_size);
    const double margin = font_size;
    const double step = 1.4 * font_size;
    double y = margin + font_size;
    for (const auto& line : lines) {
      if (y > height - margin / 2) break;
      cairo_move_to(cr.get(), margin, y);
      cairo_show_text(cr.get(), line.c_str());
      y += step;
    }
  }
  cairo_surface_flush(s.get());
  const unsigned char* data = cairo_image_surface_get_data(s.get());
  const int stride = cairo_image_surface_get_stride(s.get());
  torch::Tensor out = torch::empty({height, width}, torch::kFloat32);
  float* o = out.data_ptr<float>();
  for (int r = 0; r < height; ++r) {
    const auto* row = reinterpret_cast<const uint32_t*>(data + r * stride);
    for (int c = 0; c < width; ++c) {
      const uint32_t p = row[c];  // xRGB, native endian
      const double gray = 0.299 * ((p >> 16) & 0xff) +
                          0.587 * ((p >> 8) & 0xff) + 0.114 * (p & 0xff);
      o[r * width + c] = static_cast<float>(gray / 255.0);
    }
  }
  return out;
}

std::vector<double> nice_ticks(double lo, double hi, int max_ticks) {
  if (!std::isfinite(hi - lo) || hi < lo) return {};
  if (hi == lo) return {lo};
  max_ticks = std::max(max_ticks, 2);
  return ticks_of(nice_step(lo, hi, max_ticks), lo, hi, max_ticks);
}

void save_line_chart(const LineChart& chart, const std::string& png_path) {
  save_line_charts({chart}, png_path);
}

void save_line_charts(const std::vector<LineChart>& charts,
                      const std::string& png_path) {
  if (charts.empty()) {
    throw ConfigError("figure '" + png_path + "': no charts to draw");
  }
  int width = 0, height = 0;
  for (const LineChart& c : charts) {
    width += std::max(c.width, 0);
    height = std::max(height, c.height);
  }
  Surface surface = new_surface(width, height, png_path);
  Context cr = new_context(surface.get());
  double x = 0;
  for (const LineChart& c : charts) {
    draw_line_chart(cr.get(), c, x, 0, png_path);
    x += c.width;
  }
  write_png_atomic(cr.get(), surface.get(), png_path);
}

void save_confusion_matrix(const std::array<std::array<int64_t, 2>, 2>& m,
                           const std::array<std::string, 2>& labels,
                           const std::string& title,
                           const std::string& png_path) {
  for (const auto& row : m) {
    for (int64_t v : row) {
      if (v < 0) {
        throw ConfigError("confusion matrix '" + png_path +
                          "': negative count " + std::to_string(v));
      }
    }
  }
  const double cell = 150, pad = 16, name_font = 13, label_font = 13;
  // Measure the class names on a scratch surface to size the figure.
  Surface scratch = new_surface(1, 1, png_path);
  Context measure = new_context(scratch.get());
  set_font(measure.get(), name_font);
  std::array<std::string, 2> names;
  double name_w = 0;
  for (int i = 0; i < 2; ++i) {
    names[i] = fit_text(measure.get(), labels[i], 220);
    name_w = std::max(name_w, text_width(measure.get(), names[i]));
  }
  set_font(measure.get(), 15, true);
  const double title_w = text_width(measure.get(), title);

  const double grid_left = pad + label_font + 12 + name_w + 12;
  const double grid_top = pad + (title.empty() ? 0 : 32);
  const double grid_w = 2 * cell;
  const int width = static_cast<int>(
      std::ceil(std::max(grid_left + grid_w + pad + 8, title_w + 2 * pad)));
  const double grid_bottom = grid_top + 2 * cell;
  const int height = static_cast<int>(std::ceil(
      grid_bottom + 10 + name_font + 12 + label_font + 16 + 11 + pad));
  Surface surface = new_surface(width, height, png_path);
  Context ctx = new_context(surface.get());
  cairo_t* cr = ctx.get();

  const char* kinds[2][2] = {{"TN", "FP"}, {"FN", "TP"}};
  for (int r = 0; r < 2; ++r) {
    const int64_t total = m[r][0] + m[r][1];
    for (int c = 0; c < 2; ++c) {
      const double x = grid_left + c * cell, y = grid_top + r * cell;
      const double frac =
          total > 0 ? static_cast<double>(m[r][c]) / total : -1.0;
      set_color(cr, frac >= 0 ? blues(frac) : Rgb{0.95, 0.95, 0.95});
      cairo_rectangle(cr, x + 1, y + 1, cell - 2, cell - 2);
      cairo_fill(cr);
      const Rgb bg = frac >= 0 ? blues(frac) : Rgb{1, 1, 1};
      const double luminance = 0.2126 * bg.r + 0.7152 * bg.g + 0.0722 * bg.b;
      const Rgb ink = luminance < 0.5 ? Rgb{1, 1, 1} : kText;
      set_color(cr, ink);
      set_font(cr, 28, true);
      draw_text(cr, std::to_string(m[r][c]), x + cell / 2, y + cell / 2 - 6,
                Align::kCenter, Align::kEnd);
      set_font(cr, 14);
      char pct[32];
      if (frac >= 0) {
        std::snprintf(pct, sizeof(pct), "%.1f%%", 100 * frac);
      } else {
        std::snprintf(pct, sizeof(pct), "n/a");
      }
      draw_text(cr, pct, x + cell / 2, y + cell / 2 + 10, Align::kCenter,
                Align::kStart);
      set_color(cr, ink, 0.7);
      set_font(cr, 10.5);
      draw_text(cr, kinds[r][c], x + 8, y + 8, Align::kStart, Align::kStart);
    }
  }

  set_color(cr, kText);
  set_font(cr, name_font);
  for (int i = 0; i < 2; ++i) {
    draw_text(cr, names[i], grid_left - 12, grid_top + (i + 0.5) * cell,
              Align::kEnd, Align::kCenter);
    draw_text(cr, fit_text(cr, names[i], cell - 8),
              grid_left + (i + 0.5) * cell, grid_bottom + 10, Align::kCenter,
              Align::kStart);
  }
  set_font(cr, label_font, true);
  draw_text_vertical(cr, "true", pad + label_font / 2, grid_top + cell);
  const double predicted_y = grid_bottom + 10 + name_font + 12;
  draw_text(cr, "predicted", grid_left + cell, predicted_y, Align::kCenter,
            Align::kStart);
  set_font(cr, 10.5);
  set_color(cr, kMuted);
  draw_text(cr, "percentages are shares of each true-class row",
            grid_left + cell, predicted_y + label_font + 16, Align::kCenter,
            Align::kStart);
  if (!title.empty()) {
    // Centred over the cells when it fits there, else over the figure.
    const double cx = std::clamp(grid_left + cell, pad + title_w / 2,
                                 width - pad - title_w / 2);
    set_color(cr, kText);
    set_font(cr, 15, true);
    draw_text(cr, title, cx, pad, Align::kCenter, Align::kStart);
  }
  write_png_atomic(cr, surface.get(), png_path);
}

void save_image_grid(const std::vector<Tile>& tiles,
                     const GridOptions& options,
                     const std::string& png_path) {
  const std::string what = "image grid '" + png_path + "'";
  if (tiles.empty()) throw ConfigError(what + ": no tiles to draw");
  if (options.columns < 1) {
    throw ConfigError(what + ": columns is " + std::to_string(options.columns) +
                      "; use at least 1");
  }
  if (options.tile_size < 16 || options.tile_size > 4096) {
    throw ConfigError(what + ": tile_size " +
                      std::to_string(options.tile_size) +
                      " px is outside 16..4096");
  }
  std::vector<Surface> images;
  std::vector<std::vector<std::string>> captions;
  size_t caption_rows = 0;
  for (size_t i = 0; i < tiles.size(); ++i) {
    images.push_back(tensor_to_surface(
        tiles[i].image, what + " tile " + std::to_string(i), png_path));
    captions.push_back(caption_lines(tiles[i].caption));
    caption_rows = std::max(caption_rows, captions.back().size());
  }
  const int n = static_cast<int>(tiles.size());
  const int cols = std::min(options.columns, n);
  const int rows = (n + cols - 1) / cols;
  const double ts = options.tile_size, gap = 12, pad = 14, line_h = 14.5;
  const double caption_font = 11.5, title_font = 15;
  const double caption_h = caption_rows ? 5 + caption_rows * line_h : 0;
  const double title_h = options.title.empty() ? 0 : title_font + 16;
  const double grid_w = cols * ts + (cols - 1) * gap;
  const double grid_h = rows * (ts + caption_h) + (rows - 1) * gap;

  Surface scratch = new_surface(1, 1, png_path);
  Context measure = new_context(scratch.get());
  set_font(measure.get(), title_font, true);
  const double title_w = text_width(measure.get(), options.title);
  // Colour bar: gap, bar, tick marks and labels, optional rotated label.
  const double bar_w = 16, bar_gap = 18;
  set_font(measure.get(), 11);
  const double bar_label_w = text_width(measure.get(), "0.75");
  const double cbar_w = options.colorbar
                            ? bar_gap + bar_w + 7 + bar_label_w +
                                  (options.colorbar_label.empty() ? 0 : 24)
                            : 0;
  const double block_w = grid_w + cbar_w;
  const int width =
      static_cast<int>(std::ceil(std::max(block_w, title_w) + 2 * pad));
  const int height = static_cast<int>(std::ceil(pad + title_h + grid_h + pad));
  Surface surface = new_surface(width, height, png_path);
  Context ctx = new_context(surface.get());
  cairo_t* cr = ctx.get();

  if (!options.title.empty()) {
    set_color(cr, kText);
    set_font(cr, title_font, true);
    draw_text(cr, options.title, width / 2.0, pad, Align::kCenter,
              Align::kStart);
  }
  const double x0 = std::round((width - block_w) / 2);
  const double y0 = pad + title_h;
  set_font(cr, caption_font);
  for (int i = 0; i < n; ++i) {
    const double tx = x0 + (i % cols) * (ts + gap);
    const double ty = y0 + (i / cols) * (ts + caption_h + gap);
    cairo_surface_t* img = images[i].get();
    const double iw = cairo_image_surface_get_width(img);
    const double ih = cairo_image_surface_get_height(img);
    const double scale = std::min(ts / iw, ts / ih);
    const double dw = iw * scale, dh = ih * scale;
    const double dx = tx + (ts - dw) / 2, dy = ty + (ts - dh) / 2;
    paint_scaled(cr, img, dx, dy, dw, dh);
    set_color(cr, {0.78, 0.78, 0.78});
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, std::round(dx) - 0.5, std::round(dy) - 0.5,
                    std::round(dw) + 1, std::round(dh) + 1);
    cairo_stroke(cr);
    set_color(cr, kText);
    for (size_t l = 0; l < captions[i].size(); ++l) {
      draw_text(cr, fit_text(cr, captions[i][l], ts + gap - 4), tx + ts / 2,
                ty + ts + 7 + l * line_h, Align::kCenter, Align::kStart);
    }
  }

  if (options.colorbar) {
    const double bx = x0 + grid_w + bar_gap;
    const double by = y0;
    const double bh = rows == 1 ? ts : grid_h - caption_h;
    // 1 at the top, like every colour bar readers know.
    const torch::Tensor ramp =
        colormap_viridis(torch::linspace(1, 0, 256).unsqueeze(1));
    Surface bar = tensor_to_surface(ramp, what + " colour bar", png_path);
    paint_scaled(cr, bar.get(), bx, by, bar_w, bh);
    set_color(cr, kFrame);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, crisp(bx), crisp(by), std::round(bar_w),
                    std::round(bh) - 1);
    const std::vector<double> ticks =
        bh >= 100 ? std::vector<double>{0, 0.25, 0.5, 0.75, 1}
                  : std::vector<double>{0, 0.5, 1};
    for (double t : ticks) {
      const double y = crisp(by + (1 - t) * (bh - 1));
      cairo_move_to(cr, bx + bar_w, y);
      cairo_line_to(cr, bx + bar_w + 4, y);
    }
    cairo_stroke(cr);
    set_color(cr, kText);
    set_font(cr, 11);
    for (double t : ticks) {
      draw_text(cr, format_tick(t, 0.25), bx + bar_w + 7,
                by + (1 - t) * (bh - 1), Align::kStart, Align::kCenter);
    }
    if (!options.colorbar_label.empty()) {
      set_font(cr, 12);
      draw_text_vertical(
          cr, fit_text(cr, options.colorbar_label, std::max(bh, 60.0)),
          bx + bar_w + 7 + bar_label_w + 14, by + bh / 2);
    }
  }
  write_png_atomic(cr, surface.get(), png_path);
}

torch::Tensor colormap_viridis(const torch::Tensor& values) {
  if (!values.defined()) {
    throw ConfigError("colormap_viridis: the values tensor is undefined");
  }
  const torch::Tensor v =
      torch::nan_to_num(values.detach().to(torch::kFloat), 0.0).clamp(0, 1);
  const torch::Tensor table = viridis_table_cpu().to(v.device());
  // Linear interpolation between the 256 entries, gathered with index
  // tensors so that it runs on whatever device the values live on.
  const torch::Tensor pos = v.reshape({-1}) * 255;
  const torch::Tensor i0 = pos.floor().clamp(0, 254).to(torch::kLong);
  const torch::Tensor frac = (pos - i0.to(torch::kFloat)).unsqueeze(1);
  const torch::Tensor c0 = table.index_select(0, i0);
  const torch::Tensor c1 = table.index_select(0, i0 + 1);
  const torch::Tensor rgb = c0 + (c1 - c0) * frac;  // [N, 3]
  std::vector<int64_t> shape = {3};
  for (int64_t s : v.sizes()) shape.push_back(s);
  return rgb.t().reshape(shape).contiguous();
}

torch::Tensor overlay_heatmap(const torch::Tensor& gray,
                              const torch::Tensor& heat,
                              double alpha) {
  if (!(alpha >= 0.0 && alpha <= 1.0)) {
    throw ConfigError("overlay_heatmap: alpha " + fmt(alpha) +
                      " is not in [0, 1]");
  }
  const torch::Tensor g = as_plane(gray, "gray image");
  const torch::Tensor hm = as_plane(heat, "heat map");
  if (g.sizes() != hm.sizes()) {
    throw ConfigError("overlay_heatmap: the heat map is " + shape_of(hm) +
                      " but the gray image is " + shape_of(g) +
                      "; resize the heat map to the image size first");
  }
  check_unit_range(g, "gray image");
  check_unit_range(hm, "heat map");
  const torch::Tensor base = g.detach()
                                 .to(torch::kFloat)
                                 .clamp(0, 1)
                                 .unsqueeze(0)
                                 .expand({3, g.size(0), g.size(1)});
  const torch::Tensor colour = colormap_viridis(hm.to(g.device()));
  return (base * (1 - alpha) + colour * alpha).clamp(0, 1);
}

}  // namespace cxr::viz
