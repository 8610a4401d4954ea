// node zero_shot.mjs FOLDER IMAGE LABELS TEMPLATE DTYPE: transformers.js's zero-shot-image-classification pipeline on
// an `expclip export --to onnx` folder, as the README's one-liner runs it; prints {label: probability} as JSON.
import { env, pipeline } from "@huggingface/transformers";

const [folder, image, labels, template, dtype] = process.argv.slice(2);
env.localModelPath = "./"; // FOLDER is a folder in the current one, as the README says
env.allowRemoteModels = false; // the tests never reach the network: a missing file must fail, not download
const classifier = await pipeline("zero-shot-image-classification", folder, { dtype });
const scores = await classifier(image, labels.split(","), { hypothesis_template: template });
console.log(JSON.stringify(Object.fromEntries(scores.map(({ label, score }) => [label, score]))));
