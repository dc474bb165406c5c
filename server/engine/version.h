#ifndef YOLOHOOK_SERVER_ENGINE_VERSION_H_
#define YOLOHOOK_SERVER_ENGINE_VERSION_H_

namespace yolohook {

inline constexpr char kVersion[] = "0.1.0";

}  // namespace yolohook

#endif  // YOLOHOOK_SERVER_ENGINE_VERSION_H_
