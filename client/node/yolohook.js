'use strict';
// Loads yolohook's wire contract from the .proto files at run time (no
// generated code) and makes clients of its services.
//
// The protos are read from ../../proto (the repository's proto/ directory), or
// from $YOLOHOOK_PROTO_DIR when this directory is used elsewhere.

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_FILES = [
  'yolohook/v1/types.proto',
  'yolohook/v1/jobs.proto',
  'yolohook/v1/callbacks.proto',
  'yolohook/v1/predict.proto',
  'yolohook/v1/info.proto',
];

// Field names as written in the .proto files (snake_case), int64 as Number
// (sequence numbers and counts stay far below 2^53), enums by name, unset
// scalars as their defaults, and `kind` naming the member set in each oneof.
const LOADER_OPTIONS = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

function protoDir() {
  return process.env.YOLOHOOK_PROTO_DIR || path.join(__dirname, '..', '..', 'proto');
}

let cached = null;

// The yolohook.v1 package: service constructors and message types.
function loadV1() {
  if (cached === null) {
    const dir = protoDir();
    const definition = protoLoader.loadSync(PROTO_FILES, {...LOADER_OPTIONS, includeDirs: [dir]});
    cached = grpc.loadPackageDefinition(definition).yolohook.v1;
  }
  return cached;
}

// Call metadata: `authorization: Bearer <token>` when a token is given.
function callMetadata(token) {
  const metadata = new grpc.Metadata();
  if (token) metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

// The largest message a client accepts (events with inline images).
const MAX_MESSAGE_BYTES = 64 << 20;

// Clients of JobService, HookService, PredictService and InfoService on `target`
// (HOST:PORT). Plaintext, or TLS when `tls.ca` names the PEM file of the CA that
// signed the server's certificate (mutual TLS adds `tls.cert` and `tls.key`).
function connect(target, tls = {}) {
  const v1 = loadV1();
  const read = (file) => (file ? fs.readFileSync(file) : null);
  const credentials =
    tls.ca || tls.cert
      ? grpc.credentials.createSsl(read(tls.ca), read(tls.key), read(tls.cert))
      : grpc.credentials.createInsecure();
  const options = {
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  };
  return {
    jobs: new v1.JobService(target, credentials, options),
    callbacks: new v1.HookService(target, credentials, options),
    predict: new v1.PredictService(target, credentials, options),
    info: new v1.InfoService(target, credentials, options),
    close() {
      this.jobs.close();
      this.callbacks.close();
      this.predict.close();
      this.info.close();
    },
  };
}

// Promise form of a unary call: `unary(client.jobs, 'SubmitJob', request, token)`.
function unary(client, method, request, token, deadlineMs) {
  const options = deadlineMs ? {deadline: Date.now() + deadlineMs} : {};
  return new Promise((resolve, reject) => {
    client[method](request, callMetadata(token), options, (err, response) => {
      if (err) reject(err);
      else resolve(response);
    });
  });
}

module.exports = {grpc, loadV1, callMetadata, connect, unary, protoDir};
