// The event catalogue a server reports (ServerInfo.events): each event's name,
// the stage that fires it, the job modes it fires in and what an interceptor
// may change there, from the tables the event layer enforces.
#ifndef YOLOHOOK_SERVER_EVENTS_CATALOGUE_H_
#define YOLOHOOK_SERVER_EVENTS_CATALOGUE_H_

#include <vector>

#include "yolohook/v1/info.pb.h"

namespace yolohook::events {

// Every event, in Ultralytics' order.
std::vector<v1::EventInfo> EventCatalogue();

}  // namespace yolohook::events

#endif  // YOLOHOOK_SERVER_EVENTS_CATALOGUE_H_
