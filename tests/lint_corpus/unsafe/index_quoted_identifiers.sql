-- expect: require-concurrent-index-creation
CREATE INDEX "Idx One" ON "My Schema"."My Table" ("Col");
