#!/usr/bin/env node
// A non-Python Omoi client on nats.js, using only what a `nats` CLI user would:
// core publish, core request/reply, core subscribe, and KV reads.
//
//   node client.mjs <servers-url> publish <json> [subject] core publish to the intake, no reply
//   node client.mjs <servers-url> request <json> [subject] core request (10s), prints the reply
//   node client.mjs <servers-url> follow <ticket> <ms>     prints each event type; exit 0 on
//                                                          ticket.done, 1 on timeout
//   node client.mjs <servers-url> kvget <bucket> <key>     prints a KV value
//
// The subject defaults to the plain intake subject; pass omoi.tickets.submit.trusted for
// tickets with shell commands (a right plain submitters lack).
//
// With NATS_NKEY set to an nkey seed file (Omoi's `<data-dir>/auth/<role>.nk`), the
// client authenticates with it, as `nats --nkey` does.
//
// `follow` writes "subscribed" to stderr once the subscription is registered with the
// server, so a caller can submit only after that point. Exit code 2 means a usage or
// connection error.
import { readFileSync } from "node:fs";
import { connect, nkeyAuthenticator, StringCodec } from "nats";

const SUBMIT_SUBJECT = "omoi.tickets.submit";
const REQUEST_TIMEOUT_MS = 10_000;
const sc = StringCodec();

function usage(message) {
  process.stderr.write(`${message}\n`);
  process.stderr.write(
    "usage: client.mjs <servers-url> publish <json> | request <json> | " +
      "follow <ticket_id> <timeout_ms> | kvget <bucket> <key>\n",
  );
  process.exit(2);
}

async function publish(nc, payload, subject = SUBMIT_SUBJECT) {
  nc.publish(subject, sc.encode(payload));
  await nc.flush();
  return 0;
}

async function request(nc, payload, subject = SUBMIT_SUBJECT) {
  const reply = await nc.request(subject, sc.encode(payload), {
    timeout: REQUEST_TIMEOUT_MS,
  });
  process.stdout.write(`${sc.decode(reply.data)}\n`);
  return 0;
}

async function follow(nc, ticketId, timeoutMs) {
  const sub = nc.subscribe(`omoi.events.${ticketId}.>`);
  await nc.flush(); // the server now knows the subscription
  process.stderr.write("subscribed\n");
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    sub.unsubscribe();
  }, timeoutMs);
  try {
    for await (const msg of sub) {
      let type;
      try {
        type = JSON.parse(sc.decode(msg.data)).type;
      } catch {
        type = undefined;
      }
      // Fall back to the subject: omoi.events.<ticket_id>.<type...>
      type ??= msg.subject.split(".").slice(3).join(".");
      process.stdout.write(`${type}\n`);
      if (type === "ticket.done") {
        return 0;
      }
    }
  } finally {
    clearTimeout(timer);
  }
  if (timedOut) {
    process.stderr.write(`timed out after ${timeoutMs} ms waiting for ticket.done\n`);
  }
  return 1;
}

async function kvget(nc, bucket, key) {
  const js = nc.jetstream();
  const kv = await js.views.kv(bucket, { bindOnly: true });
  const entry = await kv.get(key);
  if (entry === null || entry.operation !== "PUT") {
    process.stderr.write(`no value for ${bucket}/${key}\n`);
    return 1;
  }
  process.stdout.write(`${entry.string()}\n`);
  return 0;
}

async function main(argv) {
  const [servers, mode, ...args] = argv;
  if (!servers || !mode) usage("missing <servers-url> or <mode>");
  const arity = { publish: [1, 2], request: [1, 2], follow: [2, 2], kvget: [2, 2] }[mode];
  if (arity === undefined) usage(`unknown mode: ${mode}`);
  const [least, most] = arity;
  if (args.length < least || args.length > most) {
    usage(`${mode} takes ${least}-${most} argument(s), got ${args.length}`);
  }

  let timeoutMs;
  if (mode === "follow") {
    timeoutMs = Number(args[1]);
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) usage(`bad timeout_ms: ${args[1]}`);
  }

  const options = {
    servers: servers.split(",").map((s) => s.trim()),
    name: `omoi-js-${mode}`,
  };
  if (process.env.NATS_NKEY) {
    const seed = readFileSync(process.env.NATS_NKEY, "utf8").trim();
    options.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
  }
  const nc = await connect(options);
  let code;
  try {
    switch (mode) {
      case "publish":
        code = await publish(nc, args[0], args[1]);
        break;
      case "request":
        code = await request(nc, args[0], args[1]);
        break;
      case "follow":
        code = await follow(nc, args[0], timeoutMs);
        break;
      case "kvget":
        code = await kvget(nc, args[0], args[1]);
        break;
    }
  } finally {
    await nc.close();
  }
  return code;
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
