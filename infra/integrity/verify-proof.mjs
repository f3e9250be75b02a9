// An independent check of one event's proof: RFC 8785, RFC 6962/9162 and
// Ed25519 (C2SP signed-note) with nothing but Node's standard library.
// Usage: node verify-proof.mjs <base URL> <token> <cursor>
import { createHash, createPublicKey, verify } from "node:crypto";

const [base, token, cursor] = process.argv.slice(2);
const get = async (path) => {
  const response = await fetch(base + path, { headers: { authorization: `Bearer ${token}` } });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
};

// RFC 8785: keys sorted by UTF-16 code units (JS's default string order),
// numbers and strings as ECMAScript serialises them.
const jcs = (value) => {
  if (Array.isArray(value)) return `[${value.map(jcs).join(",")}]`;
  if (value !== null && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${jcs(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
};
const sha256 = (...parts) => createHash("sha256").update(Buffer.concat(parts)).digest();

const event = await get(`/audit/events/${cursor}`);
const proof = await get(`/audit/events/${cursor}/proof`);
const { verifierKey } = await get("/audit/verifier-key");
delete event.mayHaveMoreData;

let hash = sha256(Buffer.from([0]), Buffer.from(jcs(event), "utf8"));
if (hash.toString("base64") !== proof.leafHash) throw new Error("the leaf hash differs from the event's");

// RFC 9162 2.1.3.2
let fn = BigInt(proof.leafIndex), sn = BigInt(proof.treeSize) - 1n;
for (const p of proof.inclusion.map((h) => Buffer.from(h, "base64"))) {
  if (sn === 0n) throw new Error("the proof is too long");
  if ((fn & 1n) === 1n || fn === sn) {
    hash = sha256(Buffer.from([1]), p, hash);
    while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
  } else {
    hash = sha256(Buffer.from([1]), hash, p);
  }
  fn >>= 1n; sn >>= 1n;
}
const note = proof.checkpoint.note;
const split = note.lastIndexOf("\n\n");
const body = note.slice(0, split + 1);
const lines = body.split("\n");
if (sn !== 0n || lines[2] !== hash.toString("base64")) throw new Error("the inclusion proof does not reach the checkpoint's root");
if (lines[1] !== String(proof.treeSize)) throw new Error("the checkpoint is of another size");

// C2SP signed-note, Ed25519: "— <name> base64(key id ‖ signature)"
// <name>+<hex id>+<base64>: the name has no "+", the base64 may.
const first = verifierKey.indexOf("+"), second = verifierKey.indexOf("+", first + 1);
const [name, id, key] = [verifierKey.slice(0, first), verifierKey.slice(first + 1, second), verifierKey.slice(second + 1)];
const publicKey = Buffer.from(key, "base64");
if (publicKey[0] !== 1) throw new Error("not an Ed25519 verifier key");
const keyId = sha256(Buffer.from(name + "\n"), Buffer.from([1]), publicKey.subarray(1)).subarray(0, 4);
if (keyId.toString("hex") !== id) throw new Error("the verifier key's id is wrong");
const der = Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), publicKey.subarray(1)]);
const signatureLine = note.slice(split + 2).split("\n").find((l) => l.startsWith(`— ${name} `));
if (!signatureLine) throw new Error("no signature by the verifier key's name");
const signed = Buffer.from(signatureLine.split(" ")[2], "base64");
if (!signed.subarray(0, 4).equals(keyId)) throw new Error("the signature is by another key");
const ok = verify(null, Buffer.from(body, "utf8"), createPublicKey({ key: der, format: "der", type: "spki" }), signed.subarray(4));
if (!ok) throw new Error("the checkpoint's signature does not verify");
console.log(`verified: leaf ${proof.leafIndex} of ${proof.treeSize}, signed by ${name}`);
