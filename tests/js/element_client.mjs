// An Element-like client for coopbot's tests: matrix-js-sdk (the SDK Element is built on)
// with its rust crypto, trusting only cross-signed devices as Element does after MSC4153.
//
// Input: one JSON object as argv[2]:
//   {homeserver, user_id, password, room_id, bot_id, send, expect, timeout_ms}
// It logs in, joins room_id (it must be invited), sends `send` (if any) to the room and
// then waits for a message from bot_id whose body contains `expect`.
// Output on stdout, one JSON object per line (everything else goes to stderr):
//   {"event": "ready", "sent": "$id"}               joined, synced, `send` sent
//   {"event": "result", "decrypted": bool, "body", "msgtype", "reply_to",
//    "bot_events": n, "failures": [reason, ...]}    at the answer, or at the timeout
import { format } from "node:util";

import { ClientEvent, MatrixEventEvent, RoomEvent, createClient } from "matrix-js-sdk";
import { OnlySignedDevicesIsolationMode } from "matrix-js-sdk/lib/crypto-api/index.js";
import { logger } from "matrix-js-sdk/lib/logger.js";

// The SDK logs through console.log; stdout is for our JSON lines only.
for (const level of ["log", "info", "debug", "warn", "error", "trace"]) {
  console[level] = (...args) => process.stderr.write(format(...args) + "\n");
}
logger.setLevel(process.env.JS_SDK_LOG || "warn");

const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const opts = JSON.parse(process.argv[2]);

async function main() {
  const login = await createClient({ baseUrl: opts.homeserver }).loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: opts.user_id },
    password: opts.password,
    initial_device_display_name: "element-like test client",
  });
  const client = createClient({
    baseUrl: opts.homeserver,
    userId: login.user_id,
    deviceId: login.device_id,
    accessToken: login.access_token,
  });
  await client.initRustCrypto({ useIndexedDB: false });
  // Element sets up cross-signing at sign-in, and rust crypto refuses to encrypt without it.
  await client.getCrypto().bootstrapCrossSigning({
    authUploadDeviceSigningKeys: async (makeRequest) => {
      try {
        await makeRequest(null); // a first upload needs no auth on Synapse (MSC3967)
      } catch (error) {
        const session = error.data?.session;
        await makeRequest({
          type: "m.login.password",
          identifier: { type: "m.id.user", user: opts.user_id },
          password: opts.password,
          session,
        });
      }
    },
  });
  // Element's "exclude insecure devices": no room keys to, and no messages from,
  // devices their owner has not cross-signed.
  await client.getCrypto().setDeviceIsolationMode(new OnlySignedDevicesIsolationMode());

  const fromBot = new Map(); // event id -> MatrixEvent
  let settle;
  const answered = new Promise((resolve) => (settle = resolve));
  const consider = (event) => {
    if (event.getRoomId() !== opts.room_id || event.getSender() !== opts.bot_id) return;
    if (event.getType() !== "m.room.message" && event.getType() !== "m.room.encrypted") return;
    fromBot.set(event.getId(), event);
    const body = event.getContent().body;
    if (!event.isDecryptionFailure() && typeof body === "string" && body.includes(opts.expect)) {
      settle(event);
    }
  };
  client.on(RoomEvent.Timeline, (event) => {
    consider(event);
    // A room key may arrive after the event: the SDK decrypts again and says so.
    event.on(MatrixEventEvent.Decrypted, () => consider(event));
  });

  const prepared = new Promise((resolve) => {
    client.on(ClientEvent.Sync, (state) => state === "PREPARED" && resolve());
  });
  await client.startClient({ initialSyncLimit: 0 });
  await prepared;
  await client.joinRoom(opts.room_id);
  // The bot must see this device's keys before it shares its room key with it.
  await new Promise((resolve) => setTimeout(resolve, 500));
  let sent = null;
  if (opts.send) {
    sent = (await client.sendTextMessage(opts.room_id, opts.send)).event_id;
  }
  say({ event: "ready", sent });

  const timeout = new Promise((resolve) => setTimeout(() => resolve(null), opts.timeout_ms));
  const answer = await Promise.race([answered, timeout]);
  const events = [...fromBot.values()];
  say({
    event: "result",
    decrypted: answer !== null,
    body: answer ? answer.getContent().body : null,
    msgtype: answer ? answer.getContent().msgtype : null,
    reply_to: answer ? (answer.getContent()["m.relates_to"]?.["m.in_reply_to"]?.event_id ?? null) : null,
    bot_events: events.length,
    failures: events.filter((e) => e.isDecryptionFailure()).map((e) => e.decryptionFailureReason),
  });
  client.stopClient();
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`element_client: ${error.stack || error}\n`);
    process.exit(1);
  },
);
