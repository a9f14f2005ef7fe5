#!/usr/bin/env node
// Lists NATS micro services with nats.js's own service client (@nats-io/services), as any
// NATS user's tool would: nothing here knows Omoi.
//
//   node services.mjs <servers-url> ping|info|stats [name [id]]
//
// Prints one JSON array of every reply to `$SRV.<VERB>[.<name>[.<id>]]` (the client
// gathers them until they pause). With NATS_NKEY set to an nkey seed file, it
// authenticates with it, as `nats --nkey` does. Exit code 2: a usage or connection error.
import { readFileSync } from "node:fs";
import { Svcm } from "@nats-io/services";
import { connect, nkeyAuthenticator } from "@nats-io/transport-node";

const VERBS = new Set(["ping", "info", "stats"]);

function usage(message) {
  process.stderr.write(`${message}\n`);
  process.stderr.write("usage: services.mjs <servers-url> ping|info|stats [name [id]]\n");
  process.exit(2);
}

async function main(argv) {
  const [servers, verb, name = "", id = ""] = argv;
  if (!servers || !VERBS.has(verb)) usage(`missing <servers-url> or bad verb: ${verb}`);
  const options = { servers: servers.split(",").map((s) => s.trim()), name: "omoi-js-services" };
  if (process.env.NATS_NKEY) {
    const seed = readFileSync(process.env.NATS_NKEY, "utf8").trim();
    options.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
  }
  const nc = await connect(options);
  try {
    const replies = await new Svcm(nc).client()[verb](name, id);
    const found = [];
    for await (const reply of replies) {
      found.push(reply);
    }
    process.stdout.write(`${JSON.stringify(found)}\n`);
  } finally {
    await nc.close();
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`error: ${err?.message ?? err}\n`);
    process.exitCode = 2;
  },
);
