// Small, portable random helpers for the data pipeline.
//
// The standard distributions are implementation-defined, so the same seed could
// give different augmentations (and a different `shapes` dataset) with another
// standard library. These helpers only use the raw std::mt19937 output, whose
// sequence the standard fixes.
#ifndef YOLOHOOK_SERVER_ENGINE_DATA_RANDOM_H_
#define YOLOHOOK_SERVER_ENGINE_DATA_RANDOM_H_

#include <cstdint>
#include <random>

namespace yolohook::data {

// A uniform double in [lo, hi), with 53 random bits.
inline double RandomUniform(std::mt19937& rng, double lo, double hi) {
  const uint64_t a = rng() >> 5;  // 27 bits
  const uint64_t b = rng() >> 6;  // 26 bits
  const double u =
      (static_cast<double>(a) * 67108864.0 + static_cast<double>(b)) /
      9007199254740992.0;  // / 2^53
  return lo + (hi - lo) * u;
}

// A uniform integer in [lo, hi] (both inclusive; requires lo <= hi).
inline int RandomInt(std::mt19937& rng, int lo, int hi) {
  const double span = static_cast<double>(hi) - lo + 1.0;
  int value = lo + static_cast<int>(RandomUniform(rng, 0.0, span));
  return value > hi ? hi : value;
}

// True with probability p.
inline bool RandomChance(std::mt19937& rng, double p) {
  return RandomUniform(rng, 0.0, 1.0) < p;
}

// SplitMix64 finaliser: a well-mixed 64-bit value from `a` and `b`, used to
// derive independent seeds (per epoch, per sample, per image) from one seed.
inline uint64_t MixSeed(uint64_t a, uint64_t b) {
  uint64_t z = a + 0x9e3779b97f4a7c15ULL * (b + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A generator seeded from a 64-bit value through std::seed_seq (whose
// algorithm the standard fixes).
inline std::mt19937 MakeRng(uint64_t seed) {
  std::seed_seq seq{static_cast<uint32_t>(seed),
                    static_cast<uint32_t>(seed >> 32)};
  return std::mt19937(seq);
}

}  // namespace yolohook::data

#endif  // YOLOHOOK_SERVER_ENGINE_DATA_RANDOM_H_
