// Calls every TagLLM gRPC method once from Node.js and prints one JSON object with the answers.
//
// usage: node client.js --target 127.0.0.1:PORT --protos ../../../protos --user U --note N --category C [--token T]
// Exit code 0 when every call returned what the test expects to inspect; errors are reported in the JSON.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

function parseArgs(argv) {
  const out = {};
  for (let i = 2; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
      throw new Error(`bad argument ${argv[i]}: expected --name value pairs`);
    }
    out[argv[i].slice(2)] = argv[i + 1];
  }
  for (const need of ["target", "protos", "user", "note", "category"]) {
    if (!out[need]) throw new Error(`missing --${need}`);
  }
  return out;
}

const LOAD_OPTS = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

function call(client, method, request, metadata) {
  return new Promise((resolve) => {
    const deadline = new Date(Date.now() + 10000);
    client[method](request, metadata, { deadline }, (err, reply) => {
      if (err) resolve({ ok: false, code: err.code, codeName: grpc.status[err.code], details: err.details });
      else resolve({ ok: true, reply });
    });
  });
}

async function main() {
  const args = parseArgs(process.argv);
  const root = path.resolve(args.protos);
  const files = ["tag_features.proto", "recommendation.proto", "tagging.proto"].map((f) => `tagllm/v1/${f}`);
  const api = grpc.loadPackageDefinition(protoLoader.loadSync(files, { ...LOAD_OPTS, includeDirs: [root] }));
  const health = grpc.loadPackageDefinition(
    protoLoader.loadSync(path.join(__dirname, "health.proto"), LOAD_OPTS),
  );
  const creds = grpc.credentials.createInsecure();
  const v1 = api.tagllm.v1;
  const tagFeatures = new v1.TagFeatures(args.target, creds);
  const recommendation = new v1.Recommendation(args.target, creds);
  const tagging = new v1.Tagging(args.target, creds);
  const healthClient = new health.grpc.health.v1.Health(args.target, creds);
  const md = new grpc.Metadata();
  if (args.token) md.add("authorization", `Bearer ${args.token}`);

  const fresh = `node-${Date.now()}`;
  const out = {};
  out.health = await call(healthClient, "Check", { service: "" }, new grpc.Metadata());
  out.getNoteTags = await call(tagFeatures, "GetNoteTags", { note_ids: [args.note] }, md);
  out.getUserInterests = await call(tagFeatures, "GetUserInterests", { user_ids: [args.user], top_k: 5 }, md);
  out.recommend = await call(recommendation, "Recommend", { user_id: args.user, k: 5 }, md);
  out.rank = await call(recommendation, "Rank", { user_id: args.user, note_ids: [args.note] }, md);
  out.tagNotes = await call(
    tagging,
    "TagNotes",
    {
      notes: [
        {
          note_id: fresh,
          category: args.category,
          title: args.title || "a fresh note from node",
          body: args.body || "",
          image_captions: [],
        },
      ],
    },
    md,
  );
  out.freshNoteTags = await call(tagFeatures, "GetNoteTags", { note_ids: [fresh] }, md);
  out.unknownUser = await call(recommendation, "Recommend", { user_id: "no-such-user-from-node", k: 5 }, md);
  out.badK = await call(recommendation, "Recommend", { user_id: args.user, k: 0 }, md);
  out.freshNoteId = fresh;
  process.stdout.write(JSON.stringify(out) + "\n");
  for (const c of [tagFeatures, recommendation, tagging, healthClient]) c.close();
}

main().catch((e) => {
  process.stderr.write(`node client failed: ${e.stack || e}\n`);
  process.exit(2);
});
