// What a Node application sees through the official OpenAI SDK: a transcription, a stream, the models,
// and errors as the SDK's own classes with OpenAI's code and param. Prints one JSON object for the test to check.
// Usage: node sdk_check.mjs <base url> <audio file>
import fs from "node:fs";
import OpenAI, { toFile } from "openai";

const [baseURL, audioPath] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 120_000 });
const out = {};

async function caught(fn) {
  try {
    await fn();
    return { raised: null };
  } catch (err) {
    return {
      raised: err.constructor.name,
      isBadRequest: err instanceof OpenAI.BadRequestError,
      isNotFound: err instanceof OpenAI.NotFoundError,
      status: err.status ?? null,
      code: err.code ?? null,
      param: err.param ?? null,
      type: err.type ?? null,
    };
  }
}

const text = await client.audio.transcriptions.create({ file: fs.createReadStream(audioPath), model: "whisper-1" });
out.text = text.text;
out.usage = text.usage ?? null;

const verbose = await client.audio.transcriptions.create({
  file: fs.createReadStream(audioPath),
  model: "gpt-4o-transcribe",
  response_format: "verbose_json",
  timestamp_granularities: ["word"],
});
out.verbose = { language: verbose.language, words: (verbose.words ?? []).length, duration: verbose.duration };

const deltas = [];
let done = null;
const stream = await client.audio.transcriptions.create({
  file: fs.createReadStream(audioPath),
  model: "whisper-1",
  stream: true,
});
for await (const event of stream) {
  if (event.type === "transcript.text.delta") deltas.push(event.delta);
  if (event.type === "transcript.text.done") done = event.text;
}
out.stream = { deltas: deltas.length, joined: deltas.join(""), done };

out.retrieved = (await client.models.retrieve("whisper-1")).id;
out.listed = (await client.models.list()).data.map((m) => m.id);

const junk = await toFile(Buffer.from("plain text, not audio\n".repeat(20)), "notes.wav");
out.badAudio = await caught(() => client.audio.transcriptions.create({ file: junk, model: "whisper-1" }));
const junk2 = await toFile(Buffer.from("plain text, not audio\n".repeat(20)), "notes.wav");
out.badAudioStreamed = await caught(async () => {
  const s = await client.audio.transcriptions.create({ file: junk2, model: "whisper-1", stream: true });
  for await (const _ of s) {
    // an error after the stream began would raise here
  }
});
const riff = await toFile(Buffer.from("RIFF"), "a.wav");
out.unknownModel = await caught(() => client.audio.transcriptions.create({ file: riff, model: "whisper-huge" }));
const riff2 = await toFile(Buffer.from("RIFF"), "a.wav");
out.badLanguage = await caught(() =>
  client.audio.transcriptions.create({ file: riff2, model: "whisper-1", language: "xx" }),
);

console.log(JSON.stringify(out));
